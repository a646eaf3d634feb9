"""The registered datasets: the paper's five (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, SVHN),
plus CIFAR-100's coarse labels and the bundled offline subset: seven in all, each with its
official files, published MD5s, home-page URLs, license and citation. ``docs/datasets.md`` is the readable version of this table.

Augmentation per dataset: random crop with zero padding for all (2 px for the 28x28 digit
datasets, 4 px for 32x32); horizontal flips for CIFAR only (a flipped digit is another
symbol or no digit at all).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from .cifar import CIFAR10_TRAIN, read_cifar10, read_cifar100
from .datasets import (BUNDLED_DIR, DATASETS, FASHION_CLASSES, MNIST_FILES, DatasetSpec,
                       Resource, read_mnist_format)
from .svhn import SVHN_FILES, read_svhn

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR100_FINE = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl
boy bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud
cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster
house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
woman worm""".split())
CIFAR100_COARSE = tuple("""aquatic_mammals fish flowers food_containers fruit_and_vegetables
household_electrical_devices household_furniture insects large_carnivores
large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
vehicles_2""".split())
DIGITS = tuple(str(i) for i in range(10))

MNIST_CITATION = ("Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied "
                  "to document recognition. Proc. IEEE 86(11), 1998.")
FASHION_CITATION = ("H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a Novel Image Dataset for "
                    "Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.")
CIFAR_CITATION = ("A. Krizhevsky. Learning Multiple Layers of Features from Tiny Images. "
                  "Technical report, University of Toronto, 2009.")
SVHN_CITATION = ("Y. Netzer, T. Wang, A. Coates, A. Bissacco, B. Wu, A. Y. Ng. Reading Digits "
                 "in Natural Images with Unsupervised Feature Learning. NIPS Workshop on Deep "
                 "Learning and Unsupervised Feature Learning, 2011.")


def _idx_resources(md5s: tuple[str, str, str, str]) -> tuple[Resource, ...]:
    return tuple(Resource(f"{stem}.gz", md5) for stem, md5 in zip(MNIST_FILES, md5s))


def _cifar_present(folder: str, archive: str, members: tuple[str, ...], root: Path) -> bool:
    """The extracted folder (``root`` itself or ``root/folder``) or the official archive."""
    return any(all((d / m).is_file() for m in members) for d in (root, root / folder)) \
        or (root / archive).is_file()


def _register(name: str, **kw) -> DatasetSpec:
    return DATASETS.register(name)(DatasetSpec(name=name, **kw))


# --- MNIST and Fashion-MNIST: gzipped IDX (read by idx.py) -----------------------------------
# MD5s as published with the files (and used by torchvision); MNIST's home page now often
# refuses downloads, so PyTorch's mirror of the same files comes second.
_register("mnist", channels=1, size=28, classes=DIGITS, counts=(60000, 10000),
          read=read_mnist_format, files=MNIST_FILES, pad=2,
          system_dirs=("/usr/share/datasets/mnist",),
          mirrors=("http://yann.lecun.com/exdb/mnist/",
                   "https://ossci-datasets.s3.amazonaws.com/mnist/"),
          resources=_idx_resources(("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                    "d53e105ee54ea40749a09fcbcd1e9432",
                                    "9fb629c4189551a2d022fa330f9573f3",
                                    "ec29112dd5afa0611ce80d1b7f02629c")),
          info={"source": "http://yann.lecun.com/exdb/mnist/", "license": "CC BY-SA 3.0",
                "citation": MNIST_CITATION, "size": "11 MB"})
_register("fashion-mnist", channels=1, size=28, classes=FASHION_CLASSES, counts=(60000, 10000),
          read=read_mnist_format, files=MNIST_FILES, pad=2,
          system_dirs=("/usr/share/datasets/fashion-mnist",),
          mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                   "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                   "data/fashion/"),
          resources=_idx_resources(("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                    "25c81989df183df01b3e8a0aad5dffbe",
                                    "bef4ecab320f06d8554ea6380940ec79",
                                    "bb300cfdad3c16e7a12a480ee83cd310")),
          info={"source": "https://github.com/zalandoresearch/fashion-mnist", "license": "MIT",
                "citation": FASHION_CITATION, "size": "30 MB"})
_register("fashion-mnist-10k", channels=1, size=28, classes=FASHION_CLASSES,
          counts=(10000, 2000), read=read_mnist_format, files=MNIST_FILES, pad=2,
          default_root=BUNDLED_DIR / "fashion-mnist-10k",
          info={"source": "a stratified subset of Fashion-MNIST shipped inside robustq "
                          "(scripts/make_bundled_data.py)", "license": "MIT",
                "citation": FASHION_CITATION, "size": "5 MB (bundled)"})

# --- CIFAR-10 / CIFAR-100: python pickles in a .tar.gz (read by cifar.py) --------------------
_C10 = ("cifar-10-batches-py", "cifar-10-python.tar.gz", (*CIFAR10_TRAIN, "test_batch"))
_C100 = ("cifar-100-python", "cifar-100-python.tar.gz", ("train", "test"))
_CIFAR = dict(channels=3, size=32, pad=4, flip=True, mirrors=("https://www.cs.toronto.edu/~kriz/",))
_register("cifar10", classes=CIFAR10_CLASSES, counts=(50000, 10000), read=read_cifar10,
          files=_C10[2], present=partial(_cifar_present, *_C10),
          resources=(Resource(_C10[1], "c58f30108f718f92721af3b95e74349a", extract=_C10[0]),),
          info={"source": "https://www.cs.toronto.edu/~kriz/cifar.html",
                "license": "none stated; cite the report", "citation": CIFAR_CITATION,
                "size": "163 MB"}, **_CIFAR)
_C100_KW = dict(counts=(50000, 10000), files=_C100[2], present=partial(_cifar_present, *_C100),
                folder="cifar100",
                resources=(Resource(_C100[1], "eb9058c3a382ffc7106e4002c42a8d85",
                                    extract=_C100[0]),),
                info={"source": "https://www.cs.toronto.edu/~kriz/cifar.html",
                      "license": "none stated; cite the report", "citation": CIFAR_CITATION,
                      "size": "161 MB"}, **_CIFAR)
_register("cifar100", classes=CIFAR100_FINE, read=partial(read_cifar100, labels="fine"),
          **_C100_KW)
_register("cifar100-coarse", classes=CIFAR100_COARSE,
          read=partial(read_cifar100, labels="coarse"), **_C100_KW)

# --- SVHN cropped digits: MATLAB v5 .mat (read by svhn.py); train + test, no "extra" ---------
_register("svhn", channels=3, size=32, classes=DIGITS, counts=(73257, 26032), read=read_svhn,
          files=SVHN_FILES, pad=4, flip=False,
          mirrors=("http://ufldl.stanford.edu/housenumbers/",),
          resources=(Resource(SVHN_FILES[0], "e26dedcc434d2e4c54c9b2d4a06d8373"),
                     Resource(SVHN_FILES[1], "eb5a983be6a315427106f1b7b6d7c4b7")),
          info={"source": "http://ufldl.stanford.edu/housenumbers/",
                "license": "non-commercial use only", "citation": SVHN_CITATION,
                "size": "246 MB (train 182 MB + test 64 MB)"})
