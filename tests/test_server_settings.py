"""The server's own settings: a malformed or out-of-range variable is a clear error at startup,
naming it, and keys never show in a dump of the settings."""

import pytest

from serving.settings import ServerSettings


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("API_KEY", "API_KEYS", "ALLOWED_ORIGINS", "MAX_UPLOAD_MB", "MAX_JSON_KB", "RECOVER_AFTER_S", "DATA_DIR"):
        monkeypatch.delenv(f"INCIDENT_GRAPH_{name}", raising=False)
    monkeypatch.setenv("INCIDENT_GRAPH_HOME", str(tmp_path / "state"))
    return monkeypatch


@pytest.mark.parametrize("name, value, named", [
    ("INCIDENT_GRAPH_MAX_UPLOAD_MB", "lots", "max_upload_mb"),
    ("INCIDENT_GRAPH_MAX_UPLOAD_MB", "0", "max_upload_mb"),
    ("INCIDENT_GRAPH_MAX_JSON_KB", "99999999999", "max_json_kb"),
    ("INCIDENT_GRAPH_RECOVER_AFTER_S", "-5", "recover_after_s"),
    ("INCIDENT_GRAPH_API_KEYS", "alice", "INCIDENT_GRAPH_API_KEYS"),
    ("INCIDENT_GRAPH_API_KEYS", "alice:k1,bob:k1", "INCIDENT_GRAPH_API_KEYS"),
    ("INCIDENT_GRAPH_API_KEYS", "x" * 200 + ":k", "INCIDENT_GRAPH_API_KEYS"),
    ("INCIDENT_GRAPH_ALLOWED_ORIGINS", "not an origin", "INCIDENT_GRAPH_ALLOWED_ORIGINS"),
])
def test_a_malformed_setting_is_a_startup_error_naming_it(clean_env, name, value, named):
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=named):
        ServerSettings.from_environment()


def test_settings_from_the_environment_and_keys_kept_out_of_dumps(clean_env, tmp_path):
    clean_env.setenv("INCIDENT_GRAPH_API_KEYS", "alice:secret-one,bob:secret-two")
    clean_env.setenv("INCIDENT_GRAPH_API_KEY", "shared-secret")
    clean_env.setenv("INCIDENT_GRAPH_MAX_JSON_KB", "64")
    clean_env.setenv("STATE_DIR", "/elsewhere")  # an unprefixed name is not ours
    settings = ServerSettings.from_environment()
    assert settings.api_keys == {"shared-secret": "api-key", "secret-one": "alice", "secret-two": "bob"}
    assert settings.max_json_bytes == 64 * 1024 and settings.state_dir == tmp_path / "state"
    dumped = settings.model_dump_json() + repr(settings)
    assert not any(secret in dumped for secret in ("shared-secret", "secret-one", "secret-two"))
