"""The HTTP side of ``POST /predict``: read the body (bounded), turn its images into model inputs, hand LitServe
a small JSON payload. Runs in LitServe's API-server process, so decoding overlaps the inference worker's forward
passes, and a bad upload is answered here (a one-line 4xx JSON) without ever reaching a batch it could spoil.

The payload LitServe passes to ``ClassifierAPI.decode_request``:
    {"inputs": [base64 of (C, H, W) uint8 bytes, ...], "names": [...], "as_list": bool, "previews": [...] | None}
"""

import asyncio
import base64
import json
from urllib.parse import parse_qs

from fashion_mnist_lightning.serving.uploads import UploadError, preview, split_body, to_input


class UploadsToInputs:
    """A pure ASGI middleware (LitServer(middlewares=[(UploadsToInputs, {...})])) for ``path``."""

    def __init__(self, app, *, path: str, shape: list[int], fashion_like: bool, max_bytes: int, max_images: int,
                 max_pixels: int):  # fmt: skip
        self.app, self.path, self.shape, self.fashion_like = app, path, tuple(shape), fashion_like
        self.max_bytes, self.max_images, self.max_pixels = max_bytes, max_images, max_pixels

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        try:
            body = await self.read_body(headers, receive)
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            previews = query.get("input", [""])[0].lower() in ("1", "true")  # ?input=true: show what the model saw
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            payload = await asyncio.to_thread(self.payload, content_type, body, previews)  # Pillow frees the GIL
        except UploadError as err:
            return await send_json(send, err.status, {"detail": err.detail})
        kept = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        json_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        scope = dict(scope, headers=kept + json_headers)
        delivered = False

        async def receive_payload():
            nonlocal delivered
            if delivered:
                return await receive()  # the client's disconnect, if any
            delivered = True
            return {"type": "http.request", "body": payload, "more_body": False}

        return await self.app(scope, receive_payload, send)

    async def read_body(self, headers: dict, receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise UploadError(413, self.too_large(int(declared)))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise UploadError(400, "the client went away before the body was complete")
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                raise UploadError(413, self.too_large(size))
            more = message.get("more_body", False)
        return b"".join(chunks)

    def too_large(self, size: int) -> str:
        limit = f"the limit of {self.max_bytes:,} (--max_upload_mb)"
        return f"the upload is {size:,} bytes, over {limit}: send a smaller image"

    def payload(self, content_type: str, body: bytes, previews: bool) -> bytes:
        files, as_list = split_body(content_type, body)
        if len(files) > self.max_images:
            raise UploadError(413, f"{len(files)} images in one request is over the limit of {self.max_images} "
                              "(--max_images): split the batch")  # fmt: skip
        inputs = [to_input(name, data, self.shape, self.fashion_like, self.max_pixels) for name, data in files]
        return json.dumps({
            "inputs": [base64.b64encode(image.numpy().tobytes()).decode("ascii") for image in inputs],
            "names": [name for name, _ in files],
            "as_list": as_list,
            "previews": [preview(image) for image in inputs] if previews else None,
        }).encode()  # fmt: skip


async def send_json(send, status: int, document: dict) -> None:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
