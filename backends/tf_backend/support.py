"""What the tensorflow backend runs, per op and form, as data: importable without TensorFlow."""

from lwdsl.backend.support import SupportTable
from lwdsl.semantics.forms import CASTS, LOW_BIT
from lwdsl.language.specs import DistillSpec, PruneSpec, QuantizeSpec

SUPPORT = SupportTable(
    backend="tensorflow",
    runs={
        "prune": PruneSpec.FORMS,
        "regularize": (),
        "finetune": (),
        "smoothquant": (),
        "quantize": QuantizeSpec.FORMS,  # every form of the forms table (lwdsl.semantics.forms), gptq and group
        "export": ("keras", "saved_model", "tflite", "hf"),
        "distill": DistillSpec.FORMS,
    },
    workers=True,  # TensorFlow collective ops between the workers of TF_CONFIG (ranks.py)
    notes={
        "smoothquant": "pre-norm pairs: Llama-style (input_layernorm -> q/k/v_proj, post_attention_layernorm -> gate/up_proj) and GPT-2 (ln_1 -> attn.c_attn, ln_2 -> mlp.c_fc)",
        "quantize": "codes from the core (method=gptq and group= too, bit-identical to torch's); TFLite int8 via the TF converter, checked in LiteRT; "
        f"{'/'.join(LOW_BIT)} weights packed in the .lwz, float kernels (the gain is size, not speed); {'/'.join(CASTS)} weights stored in 16 bits (.lwz); a language model's int8 is W8A8 simulated in the model (no engine file)",
        "export": "tflite: float32, int8 (full integer or dynamic range) after int8 quantize, float16 after fp16 alone; "
        "keras/saved_model: float32 kernels (quantized and cast layers' values in float32, said with a warning); hf: a "
        "Hugging Face folder of tiny-llama/tiny-gpt2/tiny-bert or a folder read as --model (the same bytes as torch's)",
    },
)
