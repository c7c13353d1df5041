//! Test helpers: a fresh bucket on the S3-compatible server named by
//! `LEVEE_TEST_S3_ENDPOINT` (moto in CI).

use crate::StoreSettings;

/// Settings for a new, empty bucket on the test S3 server; `None` (the test skips) when
/// none is configured, unless `LEVEE_TEST_REQUIRE_SERVICES` is set.
pub async fn s3_settings() -> Option<StoreSettings> {
    let Ok(endpoint) = std::env::var("LEVEE_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("LEVEE_TEST_REQUIRE_SERVICES").is_none(),
            "LEVEE_TEST_S3_ENDPOINT is not set but LEVEE_TEST_REQUIRE_SERVICES is"
        );
        eprintln!("skipping: LEVEE_TEST_S3_ENDPOINT is not set");
        return None;
    };
    let bucket = format!("levee-test-{}", uuid::Uuid::new_v4().simple());
    create_bucket(&endpoint, &bucket).await;
    Some(StoreSettings {
        url: format!("s3://{bucket}/site"),
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key: Some(("test".into(), "test".into())),
    })
}

/// Create `bucket` on the S3-compatible server at `endpoint`.
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    // moto checks no signature but wants an Authorization header.
    let response = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request",
        )
        .send()
        .await
        .expect("S3 server answers");
    assert!(
        response.status().is_success(),
        "create bucket: {}",
        response.status()
    );
}
