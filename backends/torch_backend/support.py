"""What the torch backend runs, per op and form, as data: importable without torch
(``lwdsl check --backend``, ``lwdsl ops``)."""

from lwdsl.backend.support import SupportTable
from lwdsl.semantics.forms import CASTS, LOW_BIT
from lwdsl.language.specs import DistillSpec, PruneSpec, QuantizeSpec

SUPPORT = SupportTable(
    backend="torch",
    runs={
        "prune": PruneSpec.FORMS,
        "regularize": (),
        "finetune": (),
        "export": ("torch", "onnx", "pt2e", "hf"),
        "smoothquant": (),
        "quantize": QuantizeSpec.FORMS,  # every form of the forms table (lwdsl.semantics.forms), gptq and group
        "distill": DistillSpec.FORMS,
    },
    notes={
        "smoothquant": "pre-norm pairs: Llama-style (input_layernorm -> q/k/v_proj, post_attention_layernorm -> gate/up_proj) and GPT-2 (ln_1 -> attn.c_attn, ln_2 -> mlp.c_fc)",
        "quantize": "codes from the core; int8 CPU kernels through ONNX Runtime, and PyTorch's x86 int8 kernels on "
        f"a VNNI/AMX CPU; a language model's int8 is W8A8 simulated in the model, its int8 ONNX file beside it (MatMulIntegerToFloat); {'/'.join(LOW_BIT)} weights packed in the .lwz, float kernels (the gain is size, not speed); {'/'.join(CASTS)} weights stored in 16 bits (.lwz, model.pt)",
        "export": "onnx: int8 QDQ after int8 quantize (a language model's too: token ids in), float16/bfloat16 "
        "initializers after fp16/bf16; torch: state dict "
        "(cast layers in half; quantized layers as float32 weights holding codes * scale, said with a warning); pt2e: "
        "torch.export program for torch.compile, PT2E x86 int8 after int8 static (lwdsl[pt2e]; else onnx, said); hf: a "
        "Hugging Face folder of a transformers model (config.json, model.safetensors, tokenizer; quantized linear layers in "
        "compressed-tensors' pack-quantized layout with its quantization_config and sparsity_config, the rest float32)",
    },
    workers=True,  # torch.distributed: gloo on the CPU, NCCL on CUDA (ranks.py)
)
