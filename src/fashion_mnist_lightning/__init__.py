"""fashion-mnist-lightning: a small, correct, fast PyTorch Lightning template for Fashion-MNIST."""

__version__ = "0.1.0"
