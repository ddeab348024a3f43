"""Tests of engines/make_tiny_models.py: determinism, shapes, and that the quantized tensors
decode back to the weights they came from."""

import hashlib
import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import make_tiny_models as mtm  # noqa: E402


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def awq_unpack(packed):
    import torch

    order = (0, 2, 4, 6, 1, 3, 5, 7)
    out = torch.zeros(packed.shape[0], packed.shape[1] * 8, dtype=torch.int32)
    for i, dst in enumerate(order):
        out[:, dst::8] = (packed >> (4 * i)) & 0xF
    return out


class Builder(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = Path(cls.tmp.name)
        cls.a, cls.b = root / "a", root / "b"
        mtm.main([str(cls.a)])
        mtm.main([str(cls.b), "--variants", "bf16,awq"])

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_builds_are_byte_identical(self):
        for name in ("tiny-llama", "tiny-llama-awq"):
            self.assertEqual(digest(self.a / name), digest(self.b / name), name)
        self.assertFalse((self.b / "tiny-llama-w8a8").exists())

    def test_config_and_tokenizer(self):
        from transformers import AutoTokenizer

        cfg = json.loads((self.a / "tiny-llama" / "config.json").read_text())
        self.assertEqual(cfg["num_hidden_layers"], 4)
        self.assertEqual(cfg["hidden_size"], 256)
        self.assertEqual(cfg["num_key_value_heads"], 2)
        self.assertEqual(cfg["torch_dtype"], "bfloat16")
        tok = AutoTokenizer.from_pretrained(self.a / "tiny-llama", local_files_only=True)
        self.assertLessEqual(len(tok), cfg["vocab_size"])
        ids = tok("def main(argv):\n    return 0")["input_ids"]
        self.assertEqual(tok.decode(ids), "def main(argv):\n    return 0")
        text = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                       add_generation_prompt=True, tokenize=False)
        self.assertEqual(text, "<|user|>\nhi</s>\n<|assistant|>\n")

    def test_awq_tensors_decode_to_the_weights(self):
        import torch
        from safetensors.torch import load_file

        cfg = json.loads((self.a / "tiny-llama-awq" / "config.json").read_text())
        self.assertEqual(cfg["quantization_config"]["quant_method"], "awq")
        self.assertEqual(cfg["quantization_config"]["group_size"], 64)
        base = load_file(self.a / "tiny-llama" / "model.safetensors")
        awq = load_file(self.a / "tiny-llama-awq" / "model.safetensors")
        name = "model.layers.0.mlp.down_proj"
        w = base[f"{name}.weight"].float().t()  # [in, out]
        q = awq_unpack(awq[f"{name}.qweight"]).float()
        z = awq_unpack(awq[f"{name}.qzeros"]).float().repeat_interleave(64, dim=0)
        s = awq[f"{name}.scales"].float().repeat_interleave(64, dim=0)
        self.assertEqual(q.shape, w.shape)
        deq = (q - z) * s
        # Rounding to 16 levels per group: error at most half a step (plus fp16 scale rounding).
        self.assertLessEqual(((deq - w).abs() / s).max().item(), 0.51 + 1e-2)
        self.assertNotIn(f"{name}.weight", awq)
        self.assertEqual(awq["lm_head.weight"].dtype, torch.float16)

    def test_w8a8_tensors_decode_to_the_weights(self):
        import torch
        from safetensors.torch import load_file

        base = load_file(self.a / "tiny-llama" / "model.safetensors")
        q8 = load_file(self.a / "tiny-llama-w8a8" / "model.safetensors")
        name = "model.layers.1.self_attn.q_proj"
        self.assertEqual(q8[f"{name}.weight"].dtype, torch.int8)
        deq = q8[f"{name}.weight"].float() * q8[f"{name}.weight_scale"].float()
        w = base[f"{name}.weight"].float()
        step = q8[f"{name}.weight_scale"].float()
        # Half a step from rounding, plus up to 127 x bf16's 2^-8 relative error of the scale.
        self.assertLessEqual(((deq - w).abs() / step).max().item(), 1.0)
        cfg = json.loads((self.a / "tiny-llama-w8a8" / "config.json").read_text())
        self.assertEqual(cfg["quantization_config"]["quant_method"], "compressed-tensors")


if __name__ == "__main__":
    unittest.main()
