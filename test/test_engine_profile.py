"""Engine profiles: what a weights file says about its formulation, and that it survives every
save/load path (official checkpoint, safetensors, map header)."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from pixloc_ros.core.engine.checkpoint import (default_official_conf, export_safetensors, init_weights,
    load_checkpoint, save_official_checkpoint)
from pixloc_ros.core.engine.profile import (EngineProfile, named_profile, native_profile,
    pad_from_official_conf, profile_for_weights, reference_profile)
from pixloc_ros.core.engine.pickle_allowlist import checkpoint_safe_globals


def test_json_round_trip_and_validation():
    for profile in (reference_profile(2.0), native_profile(), dataclasses.replace(native_profile(), gradient="central")):
        assert EngineProfile.loads(profile.dumps()) == profile
        assert EngineProfile.from_json(profile.to_json()) == profile
    with pytest.raises(ValueError, match="Unsupported gradient 'forward'"):
        dataclasses.replace(native_profile(), gradient="forward")
    with pytest.raises(ValueError, match="malformed engine profile"):
        EngineProfile.from_json({"gradient": "central"})
    with pytest.raises(ValueError, match="Unsupported engine profile 'fast'"):
        named_profile("fast")


def test_pad_comes_from_the_official_conf():
    conf = default_official_conf()
    assert pad_from_official_conf(conf) == 3.0  # train_pixloc_cmu.yaml
    conf["model"]["optimizer"].pop("pad")
    conf["model"]["optimizer"]["interpolation"] = {"mode": "linear", "pad": 2}
    assert pad_from_official_conf(conf) == 2.0  # the newer spelling
    conf["model"]["optimizer"].pop("interpolation")
    assert pad_from_official_conf(conf) == 4.0  # the reference's default
    conf["model"]["optimizer"]["pad"] = "three"
    with pytest.raises(ValueError, match="unusable optimizer pad"):
        pad_from_official_conf(conf)


def test_which_profile_a_file_gets():
    assert profile_for_weights(default_official_conf()) == reference_profile(3.0)  # a released checkpoint
    assert profile_for_weights(None, None) == reference_profile()  # a bare state dict / an old export
    recorded = dataclasses.replace(native_profile(), pad=1.5)
    conf = default_official_conf()
    conf["pixloc_ros"] = {"engine_profile": recorded.to_json()}
    assert profile_for_weights(conf) == recorded
    assert profile_for_weights(None, {"engine_profile": recorded.dumps()}) == recorded


@pytest.mark.parametrize("profile", [reference_profile(3.0), reference_profile(2.0), native_profile()],
                         ids=["reference-pad3", "reference-pad2", "native"])
def test_profile_survives_checkpoint_and_safetensors(tmp_path, profile):
    from omegaconf import OmegaConf

    model = init_weights("vgg16", 3, profile=profile)
    assert model.config.pad_mode == profile.network_pad_mode
    tar = tmp_path / "w.tar"
    save_official_checkpoint(model, tar)
    loaded = load_checkpoint(tar)
    assert loaded.profile == profile and loaded.model.config.pad_mode == profile.network_pad_mode
    # Only a profile the conf does not already imply gets a section: the released weights'
    # formulation with the conf's pad is saved exactly as the reference writes it.
    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        raw = torch.load(tar, weights_only=True)
    assert ("pixloc_ros" in OmegaConf.to_container(raw["conf"])) == (profile != reference_profile(3.0))
    st = tmp_path / "w.safetensors"
    export_safetensors(loaded.model, st, half=True)
    assert load_checkpoint(st).profile == profile
    umask = os.umask(0)
    os.umask(umask)
    assert st.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file: not mkstemp's 0600


def test_shipped_weights_are_native():
    from conftest import SHIPPED_WEIGHTS

    if not SHIPPED_WEIGHTS.exists():
        pytest.skip("the shipped weights are absent")
    loaded = load_checkpoint(SHIPPED_WEIGHTS)
    assert loaded.profile == native_profile()
    assert loaded.model.config.pad_mode == "replicate"


def test_localizer_follows_the_weights_unless_told(tmp_path):
    from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig

    model = init_weights("vgg16", 0, profile=reference_profile(3.0))
    assert Localizer(model, LocalizerConfig(device="cpu")).profile == reference_profile(3.0)
    assert Localizer(model, LocalizerConfig(device="cpu", profile=native_profile())).profile == native_profile()
    assert Localizer(None, LocalizerConfig(device="cpu")).profile == native_profile()
