"""The Gemma Scope 2 preset's SAE path, on a JumpReLU SAE in that release's format built here:
sae_lens's own download and conversion (``SAE.from_pretrained`` with the release and id the
preset names) against a loopback hub, then the adapter hooks on it at ``blocks.12``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from saelora_core.adapter.hooks import attach_lora
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.models.presets import PRESETS, ModelAndSae
from saelora_core.sae.loading import load_sae
from saelora_core.testing import tiny_model_and_sae
from tests.sae.hub_server import serve

D_IN, D_SAE = 32, 64


def gemma_scope_2_files(root: Path) -> dict[str, torch.Tensor]:
    """``resid_post/layer_12_width_16k_l0_medium`` as the release lays it out (JumpReLU params,
    ``w_enc`` as (d_in, d_sae), a ``config.json``), shrunk to the tiny model's width."""
    g = torch.Generator().manual_seed(3)
    params = {
        "w_enc": torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5,
        "w_dec": torch.randn(D_SAE, D_IN, generator=g) / D_SAE**0.5,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
        "threshold": torch.rand(D_SAE, generator=g) * 0.3,
    }
    folder = (
        root
        / "google"
        / "gemma-scope-2-270m-pt"
        / PRESETS["gemma-3-270m-gemmascope2"].sae_id.replace("layer_12", "resid_post/layer_12")
    )
    folder.mkdir(parents=True)
    save_file(params, folder / "params.safetensors")
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architecture": "jump_relu",
                "model_name": "google/gemma-3-270m",
                "hf_hook_point_in": "model.layers.12.output",
            }
        )
    )
    return params


def test_preset_release_loads_through_sae_lens_and_hooks_work(tmp_path):
    params = gemma_scope_2_files(tmp_path / "hub")
    server, url = serve(tmp_path / "hub")
    preset = PRESETS["gemma-3-270m-gemmascope2"]
    script = (
        "import json, sys\n"
        "from saelora_core.sae.loading import load_sae\n"
        f"sae, ident = load_sae(release={preset.sae_release!r}, sae_id={preset.sae_id!r})\n"
        "sae.save_model(sys.argv[1])\n"
        "print(json.dumps(ident))\n"
    )
    env = {
        **os.environ,
        "HF_ENDPOINT": url,
        "HF_HUB_CACHE": str(tmp_path / "cache"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "sae")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    ident = json.loads(done.stdout.strip().splitlines()[-1])
    assert ident["release"] == "gemma-scope-2-270m-pt-res"
    assert ident["architecture"] == "jumprelu"

    sae, _ = load_sae(path=tmp_path / "sae")
    assert sae.cfg.metadata.hook_name == preset.hook_name == "blocks.12.hook_resid_post"
    # the conversion kept the release's JumpReLU: z = pre * (pre > threshold)
    x = torch.randn(5, D_IN)
    pre = x @ params["w_enc"] + params["b_enc"]
    torch.testing.assert_close(sae.encode(x), pre * (pre > params["threshold"]))
    torch.testing.assert_close(
        sae.decode(sae.encode(x)), sae.encode(x) @ params["w_dec"] + params["b_dec"]
    )

    tiny = tiny_model_and_sae(n_layers=13, layer=12, d_model=D_IN)
    mas = ModelAndSae(
        model=tiny.model, sae=sae, layer=12, hook_name=preset.hook_name, preset="tiny"
    )
    tokens = tiny.model.to_tokens("What is 7 times 8?")
    clean = mas.model(tokens)
    lora = SaeLora(D_SAE, rank=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.zero_()
    with attach_lora(mas, lora, mode="resid_add"):
        torch.testing.assert_close(mas.model(tokens), clean, rtol=0, atol=0)
    # sae_replace with a zero adapter is sae_lens's own splice of the SAE (BOS kept clean)
    with attach_lora(mas, lora, mode="sae_replace"):
        ours = mas.model(tokens)

    def splice(act, hook):
        out = act.clone()
        out[:, 1:] = sae.decode(sae.encode(act[:, 1:]))
        return out

    theirs = mas.model.run_with_hooks(tokens, fwd_hooks=[(preset.hook_name, splice)])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, clean)
