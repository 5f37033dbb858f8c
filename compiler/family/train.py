"""Train a MobileFaceNet of the family on synthetic identities (CPU, Keras).

    python -m compiler.family.train --out runs/default --identities 1500 --per-identity 48 --epochs 3

Images are rendered once into a uint8 memmap (rendering competes with training for the
same cores), then the network trains with a normalised-softmax head whose margin is
scheduled: none at first (plain normalised softmax), then a CosFace margin ramping
up, then ArcFace. Every `--eval-every` steps it reports ROC AUC on
held-out synthetic identities and saves a checkpoint, so a run can be stopped and
resumed. The result is exported with our own exporter (BatchNorm kept) to
`OUT/model.onnx`.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from compiler.synthetic import SIZE, TRAIN, render_identity, synthetic_eval_set
from compiler.verification import all_pairs, pair_scores, roc_auc


def render_dataset(out: Path, identities: int, per_identity: int, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render (or reuse) OUT/train_images.npy [N,112,112,3] uint8 and OUT/train_labels.npy."""
    images_path, labels_path = out / "train_images.npy", out / "train_labels.npy"
    meta_path = out / "train_meta.json"
    meta = {"identities": identities, "per_identity": per_identity, "size": SIZE}
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        return np.load(images_path, mmap_mode="r"), np.load(labels_path)
    out.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(images_path, "w+", np.uint8, (identities * per_identity, SIZE, SIZE, 3))
    start = time.monotonic()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        jobs = ((TRAIN, i, per_identity) for i in range(identities))
        for i, block in enumerate(pool.imap(_render_job, jobs, chunksize=8)):
            images[i * per_identity : (i + 1) * per_identity] = block
            if (i + 1) % 100 == 0 or i + 1 == identities:
                rate = (i + 1) * per_identity / (time.monotonic() - start)
                print(f"rendered {i + 1}/{identities} identities ({rate:.0f} images/s)", file=sys.stderr, flush=True)
    images.flush()
    labels = np.repeat(np.arange(identities), per_identity).astype(np.int32)
    np.save(labels_path, labels)
    meta_path.write_text(json.dumps(meta))
    return np.load(images_path, mmap_mode="r"), labels


def _render_job(args: tuple[int, int, int]) -> np.ndarray:
    return render_identity(*args)


def embedding_auc(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of cosine similarity over all pairs (the training monitor)."""
    pairs = all_pairs(labels)
    return roc_auc(pair_scores(embeddings, pairs), pairs.same)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """The paper's preprocessing, which the default model is trained with."""
    return (pixels.astype(np.float32) - 127.5) / 128.0


def train(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from compiler.family import build_keras_model, export_onnx

    out = Path(args.out)
    images, labels = render_dataset(out, args.identities, args.per_identity, args.workers)
    eval_x, eval_y = synthetic_eval_set(args.eval_images, seed=args.eval_seed)
    eval_x = normalise(eval_x.transpose(0, 2, 3, 1))

    keras.utils.set_random_seed(args.seed)
    backbone = build_keras_model(args.model, seed=None)
    dim = backbone.output_shape[-1]
    centres = tf.Variable(tf.random.normal((dim, args.identities), stddev=0.01, seed=args.seed), name="class_centres")
    steps_per_epoch = math.ceil(len(labels) / args.batch)
    total = args.steps or args.epochs * steps_per_epoch
    warmup = max(1, int(total * args.warmup))
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr * 0.01, total - warmup, alpha=0.01, warmup_target=args.lr, warmup_steps=warmup
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay)
    variables = [*backbone.trainable_variables, centres]
    scale = tf.constant(args.scale)

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, y: tf.Tensor, cos_margin: tf.Tensor, arc: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            emb = tf.math.l2_normalize(backbone(x, training=True), axis=1)
            cos = tf.clip_by_value(emb @ tf.math.l2_normalize(centres, axis=0), -1 + 1e-6, 1 - 1e-6)
            onehot = tf.one_hot(y, args.identities)
            target = tf.reduce_sum(cos * onehot, axis=1, keepdims=True)
            cosface = target - cos_margin
            theta = tf.acos(target)
            arcface = tf.where(theta + args.arcface_margin < math.pi, tf.cos(theta + args.arcface_margin), cosface)
            margin_target = tf.where(arc, arcface, cosface)
            logits = scale * (cos + onehot * (margin_target - target))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    def evaluate() -> float:
        emb = np.concatenate([backbone(eval_x[i : i + 50], training=False).numpy() for i in range(0, len(eval_x), 50)])
        return embedding_auc(emb, eval_y)

    rng = np.random.default_rng(args.seed)
    log_path = out / "train_log.jsonl"
    history = []
    start = time.monotonic()
    losses: list[float] = []
    order = rng.permutation(len(labels))
    stop = min(total, args.stop_after or total)
    for i in range(stop):
        epoch_pos = (i % steps_per_epoch) * args.batch
        if epoch_pos == 0 and i:
            order = rng.permutation(len(labels))
        idx = np.sort(order[epoch_pos : epoch_pos + args.batch])
        x = normalise(np.asarray(images[idx]))
        progress = i / total
        ramp = min(
            1.0, max(0.0, (progress - args.softmax_warmup) / max(args.arcface_after - args.softmax_warmup, 1e-9))
        )
        arc = tf.constant(progress >= args.arcface_after)
        margin = tf.constant(ramp * args.cosface_margin, tf.float32)
        losses.append(float(step(tf.constant(x), tf.constant(labels[idx]), margin, arc)))
        if (i + 1) % args.eval_every == 0 or i + 1 == stop:
            auc = evaluate()
            record = {
                "step": i + 1,
                "of": total,
                "loss": float(np.mean(losses[-args.eval_every :])),
                "eval_auc": auc,
                "lr": float(schedule(i)),
                "margin": "arcface" if bool(arc) else f"cosface {float(margin):.2f}",
                "images_per_s": (i + 1) * args.batch / (time.monotonic() - start),
                "elapsed_s": time.monotonic() - start,
            }
            history.append(record)
            with log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), file=sys.stderr, flush=True)
            backbone.save_weights(out / "checkpoint.weights.h5")
    export_onnx(backbone, out / "model.onnx")
    result = {"final": history[-1], "args": vars(args), "onnx": str(out / "model.onnx")}
    (out / "train_result.json").write_text(json.dumps(result, indent=2))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder (dataset memmap, log, checkpoint, model.onnx)")
    p.add_argument("--model", default="mobilefacenet", help="family member to train (default: mobilefacenet)")
    p.add_argument("--identities", type=int, default=1500)
    p.add_argument("--per-identity", type=int, default=48)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="train this many steps instead of --epochs")
    p.add_argument("--stop-after", type=int, default=0, help="stop (and export) after N steps of that schedule")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of steps with a linear lr warm-up")
    p.add_argument("--scale", type=float, default=32.0, help="logit scale s")
    p.add_argument("--cosface-margin", type=float, default=0.3, help="CosFace margin reached at --arcface-after")
    p.add_argument("--arcface-margin", type=float, default=0.4)
    p.add_argument("--softmax-warmup", type=float, default=0.15, help="fraction of steps without a margin")
    p.add_argument("--arcface-after", type=float, default=0.5, help="fraction of steps before ArcFace")
    p.add_argument("--eval-images", type=int, default=300, help="held-out synthetic images for the AUC monitor")
    p.add_argument("--eval-seed", type=int, default=9)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--workers", type=int, default=2, help="processes rendering the data set")
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    train(parser().parse_args())
