"""`python -m fashion_mnist_lightning.data`: find, verify and cache Fashion-MNIST (what `make data` runs)."""

import argparse
import sys
from pathlib import Path

from fashion_mnist_lightning.data.files import (
    CACHE_NAME,
    DataError,
    cache_is_valid,
    candidate_dirs,
    find_raw,
    load_cache,
    prepare,
    read_cache,
)
from fashion_mnist_lightning.errors import fail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashion_mnist_lightning.data", description=__doc__)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--no-download", dest="download", action="store_false")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless a valid cache or a local copy exists (no download)"
    )
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if args.check:
        cached = read_cache(data_dir / CACHE_NAME)
        local = any(find_raw(folder) for folder in candidate_dirs(data_dir))
        return 0 if local or (cached is not None and cache_is_valid(cached)) else 1
    try:
        path = prepare(data_dir, args.download)
    except DataError as err:
        return fail(err, 2)
    arrays = load_cache(data_dir)
    print(
        f"Fashion-MNIST ready: {len(arrays['train_labels'])} train + {len(arrays['test_labels'])} test "
        f"images, verified, cached in {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
