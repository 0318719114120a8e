"""An HTTP request body -> the images it carries -> the model's input, with a one-line 4xx for anything else.

Accepted bodies (``POST /predict``):
    image/png, image/jpeg, ... or application/octet-stream   one image, the raw file bytes
    multipart/form-data                                      one file (a single answer) or several (a list); a
                                                             field named ``images`` always gets a list
    application/json                                         {"image": "<base64>"} or {"images": ["<base64>", ...]}
                                                             (a ``data:`` URL works too)

Everything happens in memory: a request never reads or writes a path on the server's disk. Only raster formats
Pillow decodes itself are opened (no EPS/PDF helpers that would start another program).
"""

import base64
import binascii
import io
import json
from email.parser import BytesParser
from email.policy import HTTP

import numpy as np
import torch
from PIL import Image

from fashion_mnist_lightning.data.images import model_input
from fashion_mnist_lightning.errors import first_line

FORMATS = ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM"]  # what an upload may be (Pillow's names)


class UploadError(Exception):
    """A request the server refuses: the HTTP status and one line naming the problem and the fix."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def split_body(content_type: str, body: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    """([(name, image bytes)], whether the answer is a list) from a request body of ``content_type``."""
    if not body:
        raise UploadError(400, "the request body is empty: send an image file (see GET /info for the input shape)")
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("image/") or kind == "application/octet-stream":
        files, as_list = [("the image", body)], False
    elif kind == "multipart/form-data":
        files, as_list = multipart_files(content_type, body)
    elif kind == "application/json":
        files, as_list = json_images(body)
    else:
        raise UploadError(
            415,
            f"Content-Type {kind or '(none)'} is not accepted: send an image (image/png, image/jpeg, ...), "
            'multipart/form-data or JSON {"images": [base64, ...]}',
        )
    if not files:  # never an empty request in a batch: it would fail the other requests merged with it
        raise UploadError(400, "the request holds no image: send at least one")
    return files, as_list


def multipart_files(content_type: str, body: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    """Every part of a multipart/form-data body, parsed in memory (no spooling to a temporary file)."""
    header = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise UploadError(400, "the multipart body has no parts: check its boundary, or send the image as the body")
    files, as_list = [], False
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition") or ""
        files.append((part.get_filename() or field or "image", part.get_payload(decode=True) or b""))
        as_list = as_list or field == "images"
    return files, as_list or len(files) > 1


def json_images(body: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UploadError(400, 'the body is not valid JSON: send {"images": [base64, ...]}') from None
    if isinstance(document, dict) and isinstance(document.get("image"), str):
        items, as_list = [document["image"]], False
    elif isinstance(document, dict) and isinstance(document.get("images"), list):
        items, as_list = document["images"], True
    else:
        raise UploadError(400, 'JSON must be {"image": base64} or {"images": [base64, ...]}')
    files = []
    for i, item in enumerate(items):
        try:
            files.append((f"image {i + 1}", base64.b64decode(str(item).rpartition(",")[2], validate=True)))
        except binascii.Error:
            raise UploadError(400, f"image {i + 1} is not base64: encode the file's bytes with base64") from None
    return files, as_list


def to_input(name: str, data: bytes, shape: tuple[int, int, int], fashion_like: bool, max_pixels: int):
    """(C, H, W) uint8 model input from one uploaded file, converted exactly as ``fashion-mnist predict`` converts
    a file. One-line UploadError for an empty, unreadable, truncated or oversized (decompression bomb) image."""
    if not data:
        raise UploadError(400, f"{name} is empty: send the image file's bytes")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise UploadError(
                    413, f"{name} is {image.width}x{image.height} pixels, over the limit of {max_pixels:,} "
                    "(--max_pixels): send a smaller image",
                )  # fmt: skip
            return model_input(image, shape, fashion_like)
    except Image.DecompressionBombError:
        raise UploadError(413, f"{name} has more pixels than Pillow allows (a decompression bomb?)") from None
    except Image.UnidentifiedImageError:
        raise UploadError(
            400, f"{name} is not an image this server reads ({', '.join(FORMATS)}): send the image file itself"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, a corrupt header, an impossible mode
        raise UploadError(400, f"{name} cannot be decoded ({first_line(err)}): send the whole image file") from None


def preview(image: torch.Tensor) -> str:
    """A (C, H, W) uint8 model input as a PNG ``data:`` URL (what the web page shows)."""
    array = image.permute(1, 2, 0).squeeze(2).numpy()  # (H, W) or (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
