"""Bad arguments and bad tables: each is one line on the CLI (exit code 2, no traceback), refused before any
data or model loads, with nothing written in --output-dir; a token typed where a name belongs is neither
echoed nor sent to the Hub (docs/reliability.md)."""

from __future__ import annotations

import pytest
from recipe_runs import COMMON

import vitzoo
from vitzoo.errors import BadInputError

RUN = ["finetune", "--model", "deit-tiny", *COMMON]
TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"  # the shape of a real access token: hf_ and 34 characters


@pytest.mark.parametrize("backend", ["transformers", "timm"])
def test_load_refuses_heads_that_do_not_divide_the_width(backend):
    # transformers built q/k/v of 60x64 without a word; timm failed an assertion
    with pytest.raises(BadInputError, match="hidden_size 64 is not a multiple of num_attention_heads 5"):
        vitzoo.load("deit-tiny", pretrained=False, backend=backend,
                    config_overrides="hidden_size=64,num_attention_heads=5,num_hidden_layers=1")
    with pytest.raises(BadInputError, match="decoder_hidden_size 32 is not a multiple of decoder_num_attention_heads 3"):
        vitzoo.load("mae-base", task="pretraining", pretrained=False, config_overrides={
            "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "decoder_hidden_size": 32,
            "decoder_num_attention_heads": 3})

