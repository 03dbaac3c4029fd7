"""Invalid model configs are refused before any compute, with one line naming the field."""

import pytest

from tvq.config import ConfigError, build, parse_set

INVALID = [
    ("model.attention=sparse", "model.attention: got 'sparse'; allowed: vq, full"),
    ("model.dtype=float16", "model.dtype: got 'float16'; allowed: float32, bfloat16"),
    ("model.n_code=0", "model.n_code: got 0; allowed: an integer >= 1"),
    ("model.d_k=7", "model.d_k: got 7; allowed: an even number"),
    ("model.mem_len=-1", "model.mem_len: got -1; allowed: an integer >= 0"),
    ("model.block_len=48", "model.block_len: got 48; allowed: a divisor of data.update_len (128)"),
    ("model.c_gamma=1.0", "model.c_gamma: got 1.0; allowed: 0 < c_gamma < 1"),
    ("model.c_beta=-0.1", "model.c_beta: got -0.1; allowed: >= 0"),
    ("model.p_dropres=1.0", "model.p_dropres: got 1.0; allowed: 0 <= p < 1"),
    ("model.p_dropsin=-0.5", "model.p_dropsin: got -0.5; allowed: 0 <= p < 1"),
    ("model.agg_cache=maybe", "model.agg_cache: got 'maybe'; allowed: 0, 1, true, false"),
    ("model.n_layer=two", "model.n_layer: got 'two'; allowed: an integer"),
    ("model.e_scale=0", "model.e_scale: got 0.0; allowed: > 0"),
    ("model.d_head=4", "model.d_head: unknown field; allowed: vocab_size, d_model"),
]


@pytest.mark.parametrize("assignment,message", INVALID)
def test_invalid_model_config_is_refused_with_one_line(assignment, message):
    with pytest.raises(ConfigError) as error:
        build("cpu", [parse_set(assignment)])
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(message)


@pytest.mark.parametrize("preset", ["cpu", "enwik8", "imagenet64"])
def test_presets_build(preset):
    layer = {} if preset == "cpu" else {"data": {"data_dir": "/data"}}
    assert build(preset, [layer]).model.n_code >= 1
