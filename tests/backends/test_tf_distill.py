"""distill on the tensorflow backend, what only it does: a student read from a .keras file
(a torch weights file holds no architecture). What every backend does is in
tests/contract/test_distill.py."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.tensorflow
pytest.importorskip("lwdsl.backends.tf_backend")  # first: it imports Triton before TensorFlow

from lwdsl.backend import get_backend  # noqa: E402
from lwdsl.errors import LwdslError  # noqa: E402
from lwdsl.language.specs import DistillSpec  # noqa: E402

from tests.contract.helpers import make_ctx, make_data  # noqa: E402

SHAPE, LAYERS = (1, 28, 28), ["conv1", "conv2", "fc1", "fc2"]


def test_a_student_file_with_other_output_classes_is_refused_before_training(tmp_path):
    be, ctx = get_backend("tensorflow"), make_ctx(make_data(n_train=128, n_test=32))
    handle = be.load_model("seedcnn", SHAPE, 10)
    path = tmp_path / "five.keras"
    be.save_native(be.load_model("seedcnn_student", SHAPE, 5), path)
    ctx.original = be.copy_model(handle)
    with pytest.raises(LwdslError, match="has 5 output classes, the data 10"):
        be.apply(handle, DistillSpec(student=str(path)), LAYERS, ctx)
    assert handle.losses == []
