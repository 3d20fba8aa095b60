"""The optional featurecore.toml, read by the CLI and FeatureStore.open."""

import pytest

from featurecore import cli
from featurecore.config import StoreConfig, load_config
from featurecore.errors import ValidationError
from featurecore.store import FeatureStore


def test_no_file_means_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEATURECORE_CONFIG", raising=False)
    assert load_config() == StoreConfig()


def test_the_file_sets_store_repo_and_defaults_relative_to_itself(tmp_path, monkeypatch, example_repo, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "featurecore.toml").write_text(
        f'store = "data/store"\nrepo = "{example_repo}"\ntenant = "shop_b"\npurpose = "non_personalized"\nrefresh_interval_s = 0.25\n'
    )
    monkeypatch.chdir(project)
    monkeypatch.delenv("FEATURECORE_CONFIG", raising=False)
    settings = load_config()
    assert settings.store == str(project / "data" / "store") and settings.tenant == "shop_b"
    # The CLI needs no --store / --repo now.
    assert cli.main(["apply"]) == 0 and "registry revision 1 in " + str(project / "data" / "store") in capsys.readouterr().out
    with FeatureStore.open() as store:  # no path: the config file's store
        assert store.root == str(project / "data" / "store") and store.state.revision == 1
        assert store.config.purpose == "non_personalized"
    with FeatureStore.open(mode="secondary") as follower:
        assert follower.online_stats()["refresh"]["interval_s"] == 0.25
    with FeatureStore.open(mode="secondary", refresh_interval_s=2.0) as follower:  # explicit wins
        assert follower.online_stats()["refresh"]["interval_s"] == 2.0
    # From another folder, FEATURECORE_CONFIG names the file.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATURECORE_CONFIG", str(project / "featurecore.toml"))
    assert load_config().repo == str(example_repo)


def test_a_bad_file_names_the_key_and_the_fix(tmp_path):
    path = tmp_path / "featurecore.toml"
    path.write_text('stor = "x"\nrefresh_interval_s = "fast"\n')
    with pytest.raises(ValidationError, match=r"unknown key 'stor' \(known: store, repo, .*refresh_interval_s must be int or float, got 'fast'"):
        load_config(path)
    path.write_text("store = [\n")
    with pytest.raises(ValidationError, match=r"is not valid TOML"):
        load_config(path)
    with pytest.raises(ValidationError, match=r"config file '.*nope.toml' does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("line", "message"), [
    ('tenant = ""', r"tenant: tenant must be a non-empty str of at most 255 UTF-8 bytes, got ''"),
    ('purpose = ""', r"purpose must be a non-empty str, got ''"),
    ("refresh_interval_s = -1", r"refresh_interval_s must be a positive number of seconds, got -1"),
    ("refresh_interval_s = inf", r"refresh_interval_s must be a positive number of seconds, got inf"),
])
def test_a_value_the_store_would_refuse_is_reported_against_the_file(tmp_path, line, message):
    """tenant = "" or refresh_interval_s = -1 loaded, and the error came later from a call
    the user never made with that argument ("refresh_interval_s must be a positive
    number", "tenant must be a non-empty str") without naming the file."""
    path = tmp_path / "featurecore.toml"
    path.write_text(line + "\n")
    with pytest.raises(ValidationError, match=rf"config file '.*featurecore.toml': {message}"):
        load_config(path)
    with pytest.raises(ValidationError, match=rf"config file '.*featurecore.toml': {message}"):
        FeatureStore.open(tmp_path / "store", config=path)
