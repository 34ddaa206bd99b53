import pytest

from pipeline.config import DEFAULT_STORE, Settings


def test_defaults_are_embedded():
    s = Settings.load(environ={})
    assert s.store == DEFAULT_STORE
    assert s.mongo_url is None and s.scheduler is None
    assert s.storage_options == {}


def test_environment_overrides_file(tmp_path):
    cfg = tmp_path / "tess.toml"
    cfg.write_text('store = "s3://bucket/x"\ns3_endpoint = "http://127.0.0.1:9000"\n'
                   'mongo_url = "mongodb://db:27017/"\n')
    s = Settings.load(cfg, environ={"TESS_MONGO_URL": "mongodb://other:1/",
                                    "TESS_S3_KEY": "k", "TESS_S3_SECRET": "s"})
    assert s.store == "s3://bucket/x"
    assert s.mongo_url == "mongodb://other:1/"
    assert s.storage_options == {"key": "k", "secret": "s",
                                 "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}


def test_config_file_from_environment(tmp_path):
    cfg = tmp_path / "tess.toml"
    cfg.write_text('scheduler = "tcp://10.0.0.1:8786"\n')
    assert Settings.load(environ={"TESS_CONFIG": str(cfg)}).scheduler == "tcp://10.0.0.1:8786"


def test_secrets_never_in_repr():
    s = Settings(s3_key="AKIAEXAMPLE", s3_secret="very-secret", api_key="api-secret")
    text = repr(s)
    assert "very-secret" not in text and "AKIAEXAMPLE" not in text and "api-secret" not in text


def test_bad_file_is_named(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("store = [unterminated\n")
    with pytest.raises(ValueError, match="bad.toml"):
        Settings.load(cfg, environ={})
    cfg.write_text('stroe = "typo"\n')
    with pytest.raises(ValueError, match="unknown settings.*stroe"):
        Settings.load(cfg, environ={})


def test_replace_ignores_unset_options():
    s = Settings(store="a").replace(store=None, mongo_url="mongodb://x/")
    assert s.store == "a" and s.mongo_url == "mongodb://x/"
