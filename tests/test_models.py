"""Model presets as data, model resolution, and a clear error for an unreachable Hub."""

import pytest

from healthslm.errors import HealthSLMError
from healthslm.models.loader import load_model_and_tokenizer
from healthslm.models.registry import load_preset, preset_names, resolve_model

SEED_MODELS = [
    "smollm2-135m",
    "tinyllama",
    "qwen2.5-1.5b",
    "qwen2-1.5b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "phi-3-mini",
    "phi-3.5-mini",
    "gemma-2-2b",
    "smollm-1.7b",
]


def test_every_seed_model_has_a_preset():
    assert set(SEED_MODELS) <= set(preset_names())
    for name in preset_names():
        preset = load_preset(name)
        assert preset.name == name and preset.hf_id and preset.recipe.lora.target_modules
    assert load_preset("tinyllama").hf_id == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert load_preset("smollm2-135m").source == "gguf"


def test_local_path_and_hub_id_resolve(tmp_path):
    assert resolve_model(str(tmp_path)).local_path == str(tmp_path.resolve())
    assert resolve_model("org/some-model").hf_id == "org/some-model"
    with pytest.raises(HealthSLMError, match="not a preset .*tinyllama.*local directory.*Hub id"):
        resolve_model("no-such-model")


def test_unreachable_hub_gives_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # never resolves, even where the Hub does
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(HealthSLMError) as info:
        load_model_and_tokenizer(resolve_model("tinyllama"))
    message = str(info.value)
    assert "cannot download TinyLlama/TinyLlama-1.1B-Chat-v1.0" in message
    assert "HF_HOME" in message and "HF_TOKEN" in message and "local path" in message


def test_embedded_model_loads_from_the_cache(embedded):
    model, tokenizer = embedded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == 135
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert getattr(model.config, "quantization_config", None) is None


def test_a_re_released_gguf_of_the_same_name_and_size_is_converted_again(
    tmp_path, monkeypatch, tiny_model_dir
):
    """The dequantized-weights cache is keyed by the GGUF's content: new bytes under the old name and size
    are converted again, never served the old weights."""
    import numpy as np
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    from healthslm.export import convert
    from healthslm.models import loader

    preset = resolve_model("smollm2-135m")
    gguf = convert(tiny_model_dir, tmp_path / preset.gguf.file)
    monkeypatch.setattr(loader, "gguf_path", lambda _source: gguf)
    monkeypatch.setenv("HEALTHSLM_CACHE", str(tmp_path / "cache"))
    first = loader.converted_gguf_dir(preset)
    size = gguf.stat().st_size
    tensor = next(t for t in GGUFReader(gguf).tensors if t.name == "output_norm.weight")
    with gguf.open("r+b") as fh:  # a re-release: other weights in place, the same name and size
        fh.seek(int(tensor.data_offset))
        fh.write(np.full(tensor.n_elements, 0.5, dtype=np.float32).astype(tensor.data.dtype).tobytes())
    assert gguf.stat().st_size == size
    second = loader.converted_gguf_dir(preset)
    assert second != first
    weights = load_file(second / "model.safetensors")
    assert np.all(weights["model.norm.weight"] == 0.5)
