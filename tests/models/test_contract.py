"""Contract tests over every registered model: shapes per level, train == eval structure, a
forward + backward step through the criterion, parameter / FLOP counts."""

import numpy as np
import pytest
import torch

from detopt.errors import DetoptInputError
from detopt.models import (
    DetectionCriterion,
    Postprocessor,
    count_flops,
    count_parameters,
    create_model,
    list_models,
)
from detopt.ops import postprocess

NC = 3


def _targets(b: int, size: int) -> dict:
    g = torch.Generator().manual_seed(0)
    n = 3 * b
    xy = torch.rand(n, 2, generator=g) * size * 0.6
    wh = torch.rand(n, 2, generator=g) * size * 0.3 + 4
    return {
        "boxes": torch.cat((xy, xy + wh), 1),
        "labels": torch.randint(0, NC, (n,), generator=g),
        "batch_index": torch.arange(n) % b,
        "crowd": torch.zeros(n, dtype=torch.bool),
    }


def test_registry_lists_the_scales():
    assert {"yolo-p", "yolo-n", "yolo-s", "yolo-m"} <= set(list_models())


def test_unknown_model_lists_close_matches():
    with pytest.raises(DetoptInputError, match=r"did you mean.*yolo-n"):
        create_model("yolo_n", NC)
    with pytest.raises(DetoptInputError, match="registered"):
        create_model("resnet", NC)
    with pytest.raises(DetoptInputError, match="unexpected keyword"):
        create_model("yolo-n", NC, depth=3)


@pytest.mark.parametrize("p2", [False, True])
@pytest.mark.parametrize("name", list_models())
def test_output_shapes_and_train_eval_structure(name, p2):
    torch.manual_seed(0)
    model = create_model(name, NC, p2=p2)
    assert model.spec == {"name": name, "num_classes": NC, "p2": p2}
    strides = (4, 8, 16, 32) if p2 else (8, 16, 32)
    assert model.strides == strides
    x = torch.rand(2, 3, 64, 96)
    model.train()
    train_out = model(x)
    model.eval()
    with torch.no_grad():
        eval_out = model(x)
    assert len(train_out) == len(eval_out) == len(strides)
    for o_t, o_e, s in zip(train_out, eval_out, strides, strict=True):
        assert o_t.shape == o_e.shape == (2, 4 * 16 + NC, 64 // s, 96 // s)


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_step(name):
    torch.manual_seed(0)
    model = create_model(name, NC).train()
    crit = DetectionCriterion(NC, model.strides, model.reg_max)
    x = torch.rand(2, 3, 64, 64)
    loss, items = crit(model(x), _targets(2, 64))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(items) == {"box", "cls", "dfl"}
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # every prediction layer receives gradient
    for conv in [*model.head.box, *model.head.cls]:
        assert conv[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_models())
def test_counts_are_printed_and_plausible(name, capsys):
    model = create_model(name, 80)
    params, flops = count_parameters(model), count_flops(model, 256)
    print(f"{name}: {params / 1e6:.2f} M parameters, {flops / 1e9:.2f} GFLOPs at 256")
    assert f"{name}:" in capsys.readouterr().out
    # counts of the same model at another size scale with the pixels
    assert count_flops(model, 128) == pytest.approx(flops / 4, rel=0.02)
    assert count_parameters(model, trainable_only=True) == params


def test_yolo_n_matches_yolov8n_size():
    """YOLOv8n (80 classes): 3.16 M parameters, 8.7 GFLOPs at 640 (ultralytics' table; it also counts
    the fused BN and activations, torch's flop counter counts convolutions and matmuls only)."""
    model = create_model("yolo-n", 80)
    assert count_parameters(model) / 1e6 == pytest.approx(3.16, rel=0.05)
    assert count_flops(model, 640) / 1e9 == pytest.approx(8.7, rel=0.1)


def _decode_reference(outputs, strides, reg_max):
    """Independent float64 decode of YOLOv8-style outputs: per level, row-major cells; a cell's
    point is ``((x + 0.5)·s, (y + 0.5)·s)``; each side's distance is the softmax expectation of
    its ``reg_max`` bins times the stride. Returns ``(boxes [B, A, 4], class probs [B, A, C])``."""
    boxes, probs = [], []
    for o, s in zip(outputs, strides, strict=True):
        o = o.double().numpy()
        b, _, h, w = o.shape
        logits = o[:, : 4 * reg_max].reshape(b, 4, reg_max, h, w)
        p = np.exp(logits - logits.max(2, keepdims=True))
        p /= p.sum(2, keepdims=True)
        dist = (p * np.arange(reg_max)[None, None, :, None, None]).sum(2) * s  # [B, 4, H, W]
        cy, cx = np.meshgrid((np.arange(h) + 0.5) * s, (np.arange(w) + 0.5) * s, indexing="ij")
        xyxy = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], -1)
        boxes.append(xyxy.reshape(b, h * w, 4))
        cls = o[:, 4 * reg_max :].reshape(b, -1, h * w).transpose(0, 2, 1)
        probs.append(1 / (1 + np.exp(-cls)))
    return np.concatenate(boxes, 1), np.concatenate(probs, 1)


@pytest.mark.parametrize("method,multi_label", [("nms", False), ("soft_nms_gaussian", False),
                                                ("diou_nms", False), ("nms", True)])
def test_postprocessor_equals_postprocess_of_an_independent_decode(method, multi_label):
    model = create_model("yolo-p", NC).eval()
    with torch.no_grad():
        shapes = [o.shape for o in model(torch.rand(3, 3, 64, 96))]
    g = torch.Generator().manual_seed(0)  # raw outputs with distinct scores (no ties to break)
    out = [torch.randn(*sh, generator=g) * 2 for sh in shapes]
    post = Postprocessor(model.strides, model.reg_max, method=method, score_thr=0.3, iou_thr=0.5,
                         max_det=20, multi_label=multi_label)
    dets = post(out)
    boxes, probs = _decode_reference(out, model.strides, model.reg_max)
    assert len(dets) == 3 and boxes.shape[1] == sum(o.shape[2] * o.shape[3] for o in out)
    for i, d in enumerate(dets):
        b32 = boxes[i].astype(np.float32)
        if multi_label:
            want = postprocess(b32, probs[i].astype(np.float32), method=method, score_thr=0.3, iou_thr=0.5,
                               max_det=20)
        else:
            want = postprocess(b32, probs[i].max(1).astype(np.float32), probs[i].argmax(1), method=method,
                               score_thr=0.3, iou_thr=0.5, max_det=20)
        assert 0 < len(d) == len(want)
        np.testing.assert_allclose(d.boxes.numpy(), want.boxes, atol=2e-4)
        np.testing.assert_allclose(d.scores.numpy(), want.scores, rtol=1e-5)
        np.testing.assert_array_equal(d.labels.numpy(), want.labels)


def test_bad_input_shape():
    with pytest.raises(DetoptInputError, match=r"\[B, 3, H, W\]"):
        create_model("yolo-p", NC)(torch.rand(3, 64, 64))
