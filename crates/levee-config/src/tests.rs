// figment::Jail closures must return figment::Error, which clippy finds large.
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;

fn load_in_jail(jail: &Jail, toml: &str) -> Result<Config, ConfigError> {
    jail.create_file("levee.toml", toml).unwrap();
    Config::load(Some(&jail.directory().join("levee.toml")))
}

fn problems(result: Result<Config, ConfigError>) -> String {
    match result {
        Ok(_) => panic!("config should have been rejected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn demo_config_has_the_signups_stream_with_its_schema_inline() {
    Jail::expect_with(|_| {
        let config = Config::demo().unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        let signups = &config.streams[0];
        assert_eq!(signups.name, "signups");
        assert_eq!(
            signups.schema_json()["required"],
            serde_json::json!(["email", "zip"])
        );
        assert_eq!(signups.columns["zip"], "/zip");
        Ok(())
    });
}

#[test]
fn environment_overrides_any_key() {
    Jail::expect_with(|jail| {
        jail.set_env("LEVEE_SERVER__LISTEN", "0.0.0.0:9999");
        jail.set_env("LEVEE_QUEUE__EMBEDDED__MIN_FREE_DISK_BYTES", "1");
        // Not an override: other parts of levee read LEVEE_ADMIN_TOKEN.
        jail.set_env("LEVEE_ADMIN_TOKEN", "secret");
        let config = Config::demo().unwrap();
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:9999");
        assert_eq!(config.queue.embedded.min_free_disk_bytes, 1);
        Ok(())
    });
}

#[test]
fn starter_config_loads_its_schema_relative_to_the_file() {
    Jail::expect_with(|jail| {
        jail.create_dir("schemas").unwrap();
        jail.create_file(SIGNUP_SCHEMA_PATH, SIGNUP_SCHEMA).unwrap();
        let config = load_in_jail(jail, STARTER_TOML).unwrap();
        assert_eq!(
            config.streams[0].schema_json()["properties"]["zip"]["pattern"],
            "^[0-9]{5}$"
        );
        assert_eq!(config.server.data_dir, jail.directory().join("levee-data"));
        Ok(())
    });
}

#[test]
fn an_inline_schema_table_is_accepted() {
    Jail::expect_with(|jail| {
        let config = load_in_jail(
            jail,
            r#"
            [[streams]]
            name = "votes"
            schema = { type = "object", required = ["choice"] }
            "#,
        )
        .unwrap();
        assert_eq!(config.streams[0].table(), "votes");
        assert_eq!(config.streams[0].max_bytes, 65536);
        Ok(())
    });
}

#[test]
fn errors_name_the_key_and_the_problem() {
    Jail::expect_with(|jail| {
        let text = problems(load_in_jail(
            jail,
            "[server]\nlisten = \"not an address\"\n",
        ));
        assert!(text.contains("server.listen"), "{text}");

        let text = problems(load_in_jail(jail, "[server]\nlisten_on = \"x\"\n"));
        assert!(text.contains("listen_on"), "{text}");

        let text = problems(load_in_jail(
            jail,
            r#"
            [[streams]]
            name = "Sign Ups"
            table = "drop table;"
            schema = "missing.json"
            max_attempts = 0
            cors_origins = ["example.org"]
            [streams.columns]
            email = "email"
            "#,
        ));
        for expected in [
            "streams[0].schema: cannot read",
            "streams[0].name: \"Sign Ups\" must be",
            "streams[0].table: \"drop table;\" must be",
            "streams[0].max_attempts: must be at least 1",
            "streams[0].cors_origins[0]",
            "streams[0].columns.email: \"email\" is not a JSON pointer",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        Ok(())
    });
}

#[test]
fn duplicate_streams_and_broken_schemas_are_rejected() {
    Jail::expect_with(|jail| {
        let text = problems(load_in_jail(
            jail,
            r#"
            [[streams]]
            name = "a"
            schema = { type = "object" }
            [[streams]]
            name = "a"
            schema = { type = 12 }
            "#,
        ));
        assert!(
            text.contains("streams[1].name: \"a\" is declared twice"),
            "{text}"
        );
        assert!(
            text.contains("streams[1].schema: is not a valid JSON Schema"),
            "{text}"
        );
        Ok(())
    });
}

#[test]
fn unavailable_backends_are_refused_before_start() {
    Jail::expect_with(|jail| {
        let text = problems(load_in_jail(jail, "[queue]\nbackend = \"sqs\"\n"));
        assert!(
            text.contains("queue.backend: sqs is not available"),
            "{text}"
        );
        Ok(())
    });
}
