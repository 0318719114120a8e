"""``ClassifierAPI``: a trained FashionMNISTClassifier as a LitServe ``LitAPI``, with dynamic batching.

LitServe collects up to ``max_batch_size`` requests that arrive within ``batch_timeout`` seconds and passes them
to ``predict`` together: one forward pass (with the model's own test-time augmentation, exactly ``predict_step``)
answers them all. The images arrive already converted (middleware.py), so nothing here can fail on a user's bytes.
"""

import base64

import litserve as ls
import torch

from fashion_mnist_lightning.extras.loading import load_classifier


class ClassifierAPI(ls.LitAPI):
    def __init__(
        self, ckpt_path: str, max_batch_size: int = 16, batch_timeout: float = 0.005, threads: int | None = None
    ):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.ckpt_path = ckpt_path  # checked by the serve command; each inference process loads it in setup
        self.threads = threads  # torch threads per inference process on a CPU (None: torch's default)

    def setup(self, device: str) -> None:
        if device == "cpu" and self.threads:
            torch.set_num_threads(self.threads)
        self.model = load_classifier(self.ckpt_path)[0].to(device)  # weights_only, eval mode
        self.device = device
        self.shape = tuple(self.model.image_shape)  # (C, H, W)

    def decode_request(self, request: dict) -> dict:
        arrays = [base64.b64decode(item) for item in request["inputs"]]
        images = torch.stack([torch.frombuffer(bytearray(a), dtype=torch.uint8) for a in arrays])  # (k, C*H*W)
        return {**request, "images": images.view(len(arrays), *self.shape)}  # (k, C, H, W) uint8

    def batch(self, requests: list[dict]) -> list[dict]:
        return list(requests)  # predict concatenates their images (each request may carry several)

    def predict(self, requests: list[dict] | dict) -> list[dict] | dict:
        single = isinstance(requests, dict)  # max_batch_size 1: LitServe passes one request, unbatched
        requests = [requests] if single else requests
        images = torch.cat([r["images"] for r in requests]).to(self.device)  # (N, C, H, W) uint8
        with torch.inference_mode():
            probabilities = self.model.predict_step(images, 0).float().cpu()  # (N, classes): TTA, softmax
        chunks = probabilities.split([len(r["images"]) for r in requests])
        outputs = [{**r, "probabilities": p, "batch_size": len(images)} for r, p in zip(requests, chunks)]
        return outputs[0] if single else outputs

    def unbatch(self, outputs: list[dict]) -> list[dict]:
        return outputs

    def encode_response(self, output: dict) -> dict:
        names = self.model.class_names
        answers = []
        for i, row in enumerate(output["probabilities"].tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            answer = {"file": output["names"][i], "class": names[best], "index": best, "probability": row[best],
                      "probabilities": dict(zip(names, row))}  # fmt: skip
            if output["previews"]:
                answer["input"] = output["previews"][i]  # the converted image the model saw (PNG data URL)
            answers.append(answer)
        result = {"predictions": answers} if output["as_list"] else answers[0]
        return {**result, "batch_size": output["batch_size"]}  # images in the forward pass that answered this
