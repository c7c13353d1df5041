//! The standalone commands: init, config check, and serve's refusal of a bad config.

use std::process::Command;

fn levee(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(args)
        .current_dir(dir)
        .env_remove("LEVEE_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_config_that_checks_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = levee(dir.path(), &["init"]);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("levee.toml").exists());
    assert!(dir.path().join("schemas/signup.json").exists());

    let out = levee(dir.path(), &["config", "check", "--config", "levee.toml"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("OK") && stdout.contains("signups"),
        "{stdout}"
    );

    let again = levee(dir.path(), &["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(levee(dir.path(), &["init", "--force"]).status.success());
}

#[test]
fn a_bad_config_is_refused_before_anything_starts_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("levee.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n[[streams]]\nname = \"votes\"\nschema = \"nope.json\"\nmax_bytes = 0\n",
    )
    .unwrap();
    for args in [
        &["config", "check", "--config", "levee.toml"][..],
        &["serve", "--config", "levee.toml"][..],
    ] {
        let out = levee(dir.path(), args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("streams[0].schema: cannot read"),
            "{stderr}"
        );
        assert!(stderr.contains("streams[0].max_bytes"), "{stderr}");
    }
    assert!(
        !dir.path().join("levee-data").exists(),
        "nothing was created"
    );
}

#[test]
fn the_demo_config_checks_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = levee(dir.path(), &["config", "check"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("built-in demo"));
}
