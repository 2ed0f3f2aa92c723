"""End to end on this machine: the whole use case, from one labelled product photo to served inspection.

    python -m demo [--build build] [--image samples/chelsea.jpg]

1. label the sample board (its renderer writes Ground Truth files, as a labelling job
would) and define the product ``pcb`` from them, then train its small LaMa on its photo
(skipped when ``build/products/pcb/lama.pt`` exists), 2. build the cpu repository with
it and the product's pipeline, 3. serve it, 4. classify a photo over every route, 5.
remove the IC from the board, 6. make a training dataset and an unseen test dataset, 7.
train, evaluate and register the product's classifiers, approve them, and inspect
boards and a photo with ``pcb_inspection``. Every step is resumable: a rerun reuses
what exists.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builders import defect_parent
from builders import ensemble_dali_inception as ensemble
from builders.__main__ import main as build
from clients.classify import classify_top_k
from clients.inpaint import inpaint, png_bytes
from clients.inspect import describe, inspect
from clients.protocols import SERVER_PROTOCOLS, server_route
from defect_classifier.__main__ import main as classifier
from defect_data.pcb import main as label_sample_board
from defect_data.pipeline import main as make_dataset
from defect_data.train_lama import main as train_lama
from local_server import ServerError, TritonServer
from model_versions.repository import version_numbers
from products import find
from products.__main__ import main as products

ROOT = Path(__file__).resolve().parent.parent
STEPS = 7
PRODUCT = "pcb"


def step(number: int, text: str) -> None:
    print(f"[{number}/{STEPS}] {text}", flush=True)


def remove_ic(server: TritonServer, store: Path, out: Path) -> Path:
    """The product's labelled photo, then the served LaMa over the IC's pixels."""
    from PIL import Image

    from defect_data import groundtruth

    labelled = groundtruth.read(Path(find(PRODUCT, store).labels))
    hole = groundtruth.class_masks(labelled)["IC"]
    inpainted = inpaint(server_route(server, "http-binary"), png_bytes(labelled.image), png_bytes(hole))
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(inpainted).save(out / "board_without_IC.png")
    return out / "board_without_IC.png"


def defect_classifiers(server: TritonServer, build_dir: Path, store: Path, repository: Path, photo: Path) -> int:
    """Datasets through the served LaMa, a training run, approval, then inspection over HTTP."""
    datasets = {"train": build_dir / "dataset", "test": build_dir / "dataset-unseen"}
    step(6, f"making the training dataset {datasets['train']} and the unseen test dataset {datasets['test']}")
    common = ["--product", PRODUCT, "--products-store", str(store), "--normals-per-kind", "25", "--url",
              server.http_url]
    if make_dataset(["--out", str(datasets["train"]), *common]) != 0 or \
            make_dataset(["--out", str(datasets["test"]), "--seed", "1", *common]) != 0:
        return 1
    step(7, f"training {PRODUCT}'s parent, child and segmenter, registering them in {repository}")
    product = ["--product", PRODUCT, "--repository", str(repository)]
    if classifier(["train", *product, "--dataset", str(datasets["train"]),
                   "--test-dataset", str(datasets["test"])]) != 0:
        return 1
    latest = version_numbers(repository / f"{PRODUCT}_{defect_parent.ROLE}")[-1]
    approved = classifier(["approve", *product, "--version", str(latest), "--url", server.http_url])
    if approved not in (0, 3):  # 3: refused, not better than the served version: serving goes on
        return 1
    route = server_route(server, "http-binary")
    boards = [sorted((datasets["test"] / "test" / kind).glob("*.jpg"))[0] for kind in ("normal", "anomaly")]
    for path in [*boards, photo]:
        print(f"  {path}: {describe(inspect(route, PRODUCT, path.read_bytes()))}")
    print(f"  reports: {repository}/{PRODUCT}_{{parent,child,segmenter}}/{latest}/evaluation.md")
    return 0


def define_sample_product(build_dir: Path, store: Path) -> int:
    """The sample board's labels from its renderer, and the product ``pcb`` defined from them."""
    labels = build_dir / "pcb-labels"
    if label_sample_board(["--out", str(labels)]) != 0:
        return 1
    return products(["--store", str(store), "define", "--name", PRODUCT, "--labels", str(labels / "output.manifest")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, default=ROOT / "build", help="folder for everything the demo makes")
    parser.add_argument("--image", type=Path, default=ROOT / "samples" / "chelsea.jpg")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)
    store, repository = args.build / "products", args.build / "cpu"
    lama_weights = store / PRODUCT / "lama.pt"

    step(1, f"defining the product {PRODUCT} from its labels; " + (
        f"training its small LaMa into {lama_weights}" if not lama_weights.exists()
        else f"reusing its small LaMa {lama_weights}"))
    if define_sample_product(args.build, store) != 0:
        return 1
    if not lama_weights.exists() and train_lama(["--labels", find(PRODUCT, store).labels, "--name", PRODUCT,
                                                  "--out", str(lama_weights)]) == 1:
        print(f"  note: {PRODUCT}'s LaMa did not beat OpenCV Telea inside held-out holes (figures above); "
              "its removals are still filled with the product's own surface")
    step(2, f"building the cpu repository with {PRODUCT}'s pipeline into {repository}")
    if build(["--target", "cpu", "--out", str(repository), "--lama-weights", str(lama_weights),
              "--products-store", str(store), "--product", PRODUCT]) != 0:
        return 1
    log = args.build / "tritonserver.log"
    step(3, f"starting tritonserver on {repository} (log: {log})")
    try:  # explicit model control: approving a classifier version reloads it without a restart
        server = TritonServer(repository, sagemaker_default_model=ensemble.NAME, log_path=log,
                              extra_args=["--model-control-mode=explicit", "--load-model=*"]).start()
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        step(4, f"classifying {args.image} over every route")
        for protocol in SERVER_PROTOCOLS:
            ranked = classify_top_k(server_route(server, protocol), [args.image.read_bytes()], args.top_k)[0]
            print(f"  {protocol:17s} " + "; ".join(f"{label} ({score:.5f})" for score, _, label in ranked))
        step(5, f"removed the IC from the sample board with ensemble_lama: "
                f"{remove_ic(server, store, args.build / 'demo')}")
        status = defect_classifiers(server, args.build, store, repository, args.image)
    finally:
        server.stop()
        print(f"tritonserver stopped; log kept in {log}")
    print("note: without --inception-weights the classifier has random weights: its labels are meaningless; "
          "the routes agreeing is what step 4 shows.")
    return status


if __name__ == "__main__":
    sys.exit(main())
