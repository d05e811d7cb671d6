"""GME-Qwen2-VL's encode path on a tiny random GME-shaped checkpoint with the real Qwen tokenizer:
the rendered prompt, its token ids, final-token pooling with right padding, and the image bounds."""

from __future__ import annotations

import inspect

import pytest
import torch

from mrb.candidates.encoders import GME_PIXELS_PER_TOKEN, GMEEncoder, get_encoder, gme_fetch_image, gme_positions
from mrb.data import Record
from tests.tiny_models import PIXELS, artefact, image_bytes

SYSTEM, USER, ASSISTANT, NEWLINE = [151644, 8948, 198], [151644, 872, 198], [151644, 77091, 198], 198
IM_END, ENDOFTEXT, VISION_START, VISION_END, IMAGE_PAD = 151645, 151643, 151652, 151653, 151655


ASTRONAUT = image_bytes("astronaut")  # 512×512


@pytest.fixture(scope="module")
def tiny_gme(tmp_path_factory):
    """A tiny random Qwen2-VL (GME's architecture class) with the real Qwen tokenizer."""
    return artefact(tmp_path_factory, "qwen2_vl")


@pytest.fixture(scope="module")
def gme(tiny_gme) -> GMEEncoder:
    return get_encoder("gme-qwen2-vl-2b", checkpoint=str(tiny_gme), **PIXELS)


def test_rendered_prompts():
    assert GMEEncoder.render(Record("d1", "Hello world"), None) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello world<|im_end|>\n"
        "<|im_start|>assistant\n<|endoftext|>"
    )
    assert GMEEncoder.render(Record("q1", "Who is this?", ASTRONAUT), "Find the person.") == (
        "<|im_start|>system\nFind the person.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Who is this?<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    )
    assert GMEEncoder.render(Record("d2", None, ASTRONAUT), None) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    )


def test_token_ids_of_a_document_and_an_image_query(gme):
    doc = gme.prepare([Record("d1", "Hello world")], None)
    assert doc["input_ids"][0].tolist() == (
        SYSTEM
        + [2610, 525, 264, 10950, 17847, 13, IM_END, NEWLINE]  # "You are a helpful assistant."
        + USER
        + [9707, 1879, IM_END, NEWLINE]  # "Hello world"
        + ASSISTANT
        + [ENDOFTEXT]
    )
    query = gme.prepare([Record("q1", "Who is this?", ASTRONAUT)], "Find the person.")
    # 512×512 shrinks to the 112×112 bound: 8×8 patches of 14 px, merged 2×2 into 16 image tokens
    assert query["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert query["input_ids"][0].tolist() == (
        SYSTEM
        + [9885, 279, 1697, 13, IM_END, NEWLINE]  # "Find the person."
        + USER
        + [VISION_START]
        + [IMAGE_PAD] * 16
        + [VISION_END]
        + [15191, 374, 419, 30, IM_END, NEWLINE]
        + ASSISTANT
        + [ENDOFTEXT]
    )


def test_image_token_bounds():
    defaults = inspect.signature(GMEEncoder).parameters
    assert defaults["min_pixels"].default == 256 * GME_PIXELS_PER_TOKEN == 256 * 28 * 28
    assert defaults["max_pixels"].default == 1280 * GME_PIXELS_PER_TOKEN
    assert defaults["max_length"].default == 1800


def test_a_small_image_grows_to_the_lower_bound(gme):
    tiny = image_bytes("astronaut", size=(20, 20))
    assert gme.prepare([Record("d", None, tiny)], None)["image_grid_thw"].tolist() == [[1, 4, 4]]  # 56×56 px


def reference_embedding(gme: GMEEncoder, record: Record, instruction: str) -> list[float]:
    """GME's reference forward (gme_inference.py) step by step on one record: token embeddings with the
    image features written over the image pads, the text decoder without position ids, the final
    token, L2 norm."""
    inputs = gme.prepare([record], instruction)
    model = gme.model.model
    with torch.inference_mode():
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        if "pixel_values" in inputs:
            image = model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
            embeds[inputs["input_ids"] == IMAGE_PAD] = image
        hidden = model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).last_hidden_state
    return torch.nn.functional.normalize(hidden[0, -1], dim=0).tolist()


def test_final_token_pooling_with_right_padding_matches_the_reference_forward(gme):
    records = [Record("a", "Hello world"), Record("b", "Who is this?", ASTRONAUT), Record("c", "a much longer text " * 5)]
    batch = gme.prepare(records, "Find it.")
    last = batch["attention_mask"].sum(1) - 1
    assert batch["input_ids"][torch.arange(3), last].tolist() == [ENDOFTEXT] * 3
    assert batch["attention_mask"][0, -1].item() == 0  # right padding
    embeddings = gme.embed(records, "Find it.")
    assert embeddings.norm(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    for i, record in enumerate(records):
        assert embeddings[i].tolist() == pytest.approx(reference_embedding(gme, record, "Find it."), abs=1e-5)


def test_image_tokens_take_sequential_positions_as_in_the_reference(gme):
    """Qwen2-VL's own 2-D image positions (the model's default) give another embedding for an image item."""
    record = Record("b", "Who is this?", ASTRONAUT)
    inputs = gme.prepare([record], "Find it.")
    length = inputs["input_ids"].shape[1]
    assert gme_positions(inputs["input_ids"]).tolist() == [[list(range(length))]] * 3
    with torch.inference_mode():
        default = gme.model.model(**inputs).last_hidden_state[0, -1]
    gap = (gme.embed([record], "Find it.")[0] - torch.nn.functional.normalize(default, dim=0)).abs().max().item()
    assert gap > 1e-4  # far above float noise (~1e-7), even in this tiny random model


def test_images_are_pre_resized_as_the_reference_does():
    image = Record("x", None, image_bytes("astronaut", size=(500, 333))).image()
    assert gme_fetch_image(image).size == (504, 336)  # multiples of 28 px, within 4…16384 tokens
    assert gme_fetch_image(Record("y", None, image_bytes("astronaut", size=(20, 20))).image()).size == (56, 56)


def test_settings(gme, tiny_gme):
    assert gme.settings() == {
        "name": "gme-qwen2-vl-2b",
        "checkpoint": str(tiny_gme),
        "revision": None,
        "dtype": "float32",
        "attn_implementation": "sdpa",
        "max_length": 1800,
        **PIXELS,
    }


def test_gme_loads_as_its_reference_does(monkeypatch):
    """The pinned revision MTEB uses, float16 on a GPU (its card and MTEB's wrapper), and the aspect-ratio cut."""
    import torch

    import mrb.candidates.encoders as encoders

    seen = {}

    class Stop(Exception):
        pass

    def capture(checkpoint, **kwargs):
        seen.update(kwargs, checkpoint=checkpoint)
        raise Stop

    monkeypatch.setattr(encoders, "pick_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(
        "transformers.AutoProcessor.from_pretrained", lambda checkpoint, **kw: type("P", (), {"tokenizer": type("T", (), {})()})()
    )
    monkeypatch.setattr(encoders, "load_pretrained", lambda cls, checkpoint, **kw: capture(checkpoint, **kw))
    with pytest.raises(Stop):
        encoders.GMEEncoder()
    assert (seen["checkpoint"], seen["revision"], seen["dtype"]) == (
        "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct",
        "ce765ae71b8cdb208203cd8fb64a170b1b84293a",
        torch.float16,
    )
    assert encoders.gme_smart_resize(10, 30000) == (28, 5600)  # 1071:1 → 200:1, where qwen_vl_utils raises
    assert encoders.gme_smart_resize(480, 640) == (476, 644)
