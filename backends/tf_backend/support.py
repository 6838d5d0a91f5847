"""What the tensorflow backend runs, per op and form, as data: importable without TensorFlow."""

from lwdsl.backend.support import SupportTable
from lwdsl.semantics.forms import CASTS, LOW_BIT, STEP_FORMS
from lwdsl.language.specs import DistillSpec, PruneSpec, QuantizeSpec

SUPPORT = SupportTable(
    backend="tensorflow",
    runs={
        "prune": PruneSpec.FORMS,
        "regularize": (),
        "finetune": (),
        "smoothquant": (),
        "quantize": STEP_FORMS,  # every form of the forms table; method=gptq and group=: not yet (issue 25)
        "export": ("keras", "saved_model", "tflite"),
        "distill": DistillSpec.FORMS,
    },
    workers=True,  # TensorFlow collective ops between the workers of TF_CONFIG (ranks.py)
    notes={
        "smoothquant": "Llama-style pre-norm pairs (input_layernorm -> q/k/v_proj, post_attention_layernorm -> gate/up_proj)",
        "quantize": "method=gptq and group= run on the torch backend only for now (their codes come from the core; "
        "group scales are not wired into this backend's quantizer yet); codes from lwdsl.semantics.codes; TFLite int8 via the TF converter, checked in LiteRT; "
        f"{'/'.join(LOW_BIT)} weights packed in the .lwz, float kernels (the gain is size, not speed); {'/'.join(CASTS)} weights stored in 16 bits (.lwz); a language model's int8 is W8A8 simulated in the model (no engine file)",
        "export": "tflite: float32, int8 (full integer or dynamic range) after int8 quantize, float16 after fp16 alone; "
        "keras/saved_model: float32 kernels (quantized and cast layers' values in float32, said with a warning)",
    },
    no_models={"tiny-gpt2": "tiny-gpt2 is built on the torch backend only for now (tiny-llama and tiny-bert run here; issue 25)"},
)
