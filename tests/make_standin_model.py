"""A stand-in ONNX model with the serving contract, for tests until (and besides) the shipped model.

A ridge-regression linear classifier on the 784 pixels, fitted in closed form on real Fashion-MNIST training images
(about 80% test accuracy), written with `onnx.helper` with exactly the interface of `models/fashioncat-int8.onnx`:
input `image` float32 [N,1,28,28] in [0,1], outputs `logits` and `probs` float32 [N,10], and the `fashioncat.*`
metadata. Needs the training install (onnx, and torch through `fashioncat.data`); serving never imports it.

Usage: python tests/make_standin_model.py OUT.onnx
"""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "fashioncat-int8.onnx"
TEMPERATURE = 0.1  # ridge outputs are near one-hot targets; dividing by 0.1 gives usable probabilities


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    "Weights [784,10] and bias [10] of a ridge regression from pixels in [0,1] to one-hot labels."
    X = np.concatenate([x.reshape(len(x), -1).astype(np.float64) / 255.0, np.ones((len(x), 1))], 1)
    Y = np.eye(10)[y]
    reg = lam * np.eye(X.shape[1])
    reg[-1, -1] = 0
    Wb = np.linalg.solve(X.T @ X + reg, X.T @ Y)
    return Wb[:-1].astype(np.float32), Wb[-1].astype(np.float32)


def write_onnx(path: Path, W: np.ndarray, b: np.ndarray, metadata: dict[str, str]) -> Path:
    "Write the linear classifier as an ONNX model with the serving interface."
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
        helper.make_node("Div", ["logits", "T"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(TEMPERATURE, np.float32), "T"),
    ]
    graph = helper.make_graph(
        nodes,
        "fashioncat_standin",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fashioncat-tests")
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_standin(path: str | Path, n_train: int = 20_000) -> Path:
    "Fit the stand-in on real training images, choose its review threshold on validation images, write it."
    from fashioncat.data import CLASS_NAMES, CLASS_NAMES_RU, load_split, split_train_valid
    from fashioncat.serving import choose_review_threshold

    x, y = load_split("train")
    tr, va = split_train_valid(y, 0.1, seed=42)
    tr = tr[:n_train]
    W, b = fit_ridge(x[tr], y[tr])

    def probs(xs):
        z = (xs.reshape(len(xs), -1) / 255.0) @ W + b
        z = (z - z.max(1, keepdims=True)) / TEMPERATURE
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    pv = probs(x[va])
    acc = float((pv.argmax(1) == y[va]).mean())
    thr, prec, _ = choose_review_threshold(pv, y[va], target_precision=0.95)
    meta = {
        "fashioncat.classes": json.dumps(CLASS_NAMES),
        "fashioncat.classes_ru": json.dumps(CLASS_NAMES_RU, ensure_ascii=False),
        "fashioncat.version": "0.0.0-standin",
        "fashioncat.commit": "standin",
        "fashioncat.architecture": "ridge-linear-784",
        "fashioncat.temperature": str(TEMPERATURE),
        "fashioncat.review_threshold": f"{thr:.4f}",
        "fashioncat.review_precision": f"{prec:.4f}",
        "fashioncat.metrics": json.dumps({"accuracy": round(acc, 4), "split": "validation"}),
    }
    return write_onnx(Path(path), W, b, meta)


def model_for_tests(tmp_dir: str | Path) -> Path:
    "The shipped model when it is committed, else a stand-in built into `tmp_dir`."
    if SHIPPED.exists():
        return SHIPPED
    p = Path(tmp_dir) / "fashioncat-standin.onnx"
    return p if p.exists() else build_standin(p)


if __name__ == "__main__":
    print(build_standin(sys.argv[1] if len(sys.argv) > 1 else "fashioncat-standin.onnx"))
