"""Valid seed inputs, generated at run time (nothing binary is committed): tiny images, videos, checkpoints,
multipart bodies, face indexes and training configs. Each writer returns the files it wrote."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

__all__ = [
    "write_images",
    "write_videos",
    "write_safetensors",
    "write_pth",
    "multipart_bodies",
    "write_indexes",
    "write_configs",
    "BOUNDARY",
]

#: The multipart boundary of the upload harness (the fuzzed bytes are the body).
BOUNDARY = "cevitfuzzboundary"


def _gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def write_images(folder: Path) -> list[Path]:
    """One small image per format cevit reads, plus EXIF-rotated, palette, 16-bit and alpha variants."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_gradient(24, 16))
    out: list[Path] = []

    def save(name: str, image: Image.Image, **kwargs: object) -> None:
        path = folder / name
        image.save(path, **kwargs)
        out.append(path)

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW
    save("rgb.jpg", rgb, quality=80)
    save("exif.jpg", rgb, quality=60, exif=exif.tobytes())
    save("progressive.jpg", rgb, quality=50, progressive=True)
    save("rgb.png", rgb)
    save("rgba.png", rgb.convert("RGBA"))
    save("gray16.png", Image.fromarray(_gradient(24, 16)[..., 0].astype(np.uint16) * 257))
    save("palette.gif", rgb.convert("P"))
    save("anim.gif", rgb.convert("P"), save_all=True, append_images=[rgb.rotate(90).convert("P")])
    save("lossy.webp", rgb, quality=50)
    save("rgb.bmp", rgb)
    save("rgb.tif", rgb, compression="tiff_deflate")
    save("cmyk.jpg", rgb.convert("CMYK"))
    return out


def write_videos(folder: Path) -> list[Path]:
    """Short clips (32x24, 5 frames) in each container and a codec that container commonly holds."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    variants = [("mpeg4.mp4", "mpeg4", {}), ("mjpeg.avi", "mjpeg", {}), ("vp8.webm", "libvpx", {}),
                ("h264.mkv", "libx264", {"preset": "ultrafast"}), ("h264.mp4", "libx264", {"preset": "ultrafast"}),
                ("rotated.mp4", "mpeg4", {})]  # fmt: skip
    out: list[Path] = []
    for name, codec, options in variants:
        if codec not in av.codecs_available:
            continue
        path = folder / name
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=5)
            stream.width, stream.height = 32, 24
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            stream.codec_context.options = dict(options)
            if name == "rotated.mp4":
                stream.metadata["rotate"] = "90"
            for i in range(5):
                frame = av.VideoFrame.from_ndarray(np.roll(_gradient(32, 24), 3 * i, axis=1), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        out.append(path)
    return out


def write_safetensors(folder: Path) -> list[Path]:
    """safetensors files with a cevit checkpoint's metadata (from a real save of a small model) and small tensors:
    the header and metadata are what a reader parses before any large allocation."""
    import tempfile

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from cevit.checkpoint import save_checkpoint
    from cevit.models import create_model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "tiny.safetensors"
        save_checkpoint(create_model("cross_efficient_vit_v1", image_size=64, depth=1), full, note="fuzz seed")
        with safe_open(str(full), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
    out = []
    for name, tensors, meta in [
        ("cevit_meta.safetensors", {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, metadata),
        ("fp16.safetensors", {"a": torch.ones(3, dtype=torch.float16), "b": torch.zeros(1, dtype=torch.int64)}, metadata),
        ("plain.safetensors", {"x": torch.ones(2)}, {"format": "pt"}),
    ]:  # fmt: skip
        path = folder / name
        save_file(tensors, str(path), metadata=meta)
        out.append(path)
    return out


def write_pth(folder: Path) -> list[Path]:
    """PyTorch checkpoints like the authors' release (zip and legacy pickle), with a few small tensors."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    state = {"module.sm_image_embedder.pos_embedding": torch.zeros(1, 3, 2), "mlp_head.1.bias": torch.ones(2)}
    out = []
    for name, obj, zipped in [("state.pth", state, True), ("wrapped.pth", {"state_dict": state}, True),
                              ("legacy.pth", state, False)]:  # fmt: skip
        path = folder / name
        torch.save(obj, path, _use_new_zipfile_serialization=zipped)
        out.append(path)
    return out


def multipart_bodies() -> dict[str, bytes]:
    """Valid multipart/form-data bodies (boundary :data:`BOUNDARY`) as a browser or curl sends them."""

    def part(name: str, value: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        return head.encode() + b"\r\n" + value + b"\r\n"

    end = f"--{BOUNDARY}--\r\n".encode()
    jpeg = io.BytesIO()
    from PIL import Image

    Image.fromarray(_gradient(8, 8)).save(jpeg, format="JPEG", quality=50)
    return {
        "file_only": part("file", jpeg.getvalue(), "face.jpg", "image/jpeg") + end,
        "all_fields": part("frames", b"12") + part("threshold", b"0.7")
        + part("file", b"\x00\x01binary\r\n--notboundary\r\n", "v\u00e9deo.mp4".encode().decode("latin-1"),
               "video/mp4") + end,
        "utf8_name": part("file", b"abc", "caf\u00e9 \u2603.png") + end,
    }  # fmt: skip


def write_indexes(folder: Path) -> list[Path]:
    """Face index CSVs as ``cevit extract-faces`` writes them (with and without landmarks)."""
    folder.mkdir(parents=True, exist_ok=True)
    full = (
        "crop_path,source,frame_index,timestamp,face_index,x1,y1,x2,y2,lm0x,lm0y,lm1x,lm1y,lm2x,lm2y,lm3x,lm3y,"
        "lm4x,lm4y,det_prob,label,split,method,dataset,group,vx1,vy1,vx2,vy2\n"
        "crops/a.png,videos/a.mp4,3,0.1,0,10,12,90,100,30,40,60,40,45,60,32,80,58,80,0.99,real,train,,ff,a,0,0,128,128\n"
        "crops/b.png,videos/b.mp4,0,,1,0.5,1.5,50.25,60,,,,,,,,,,,0.9,fake,val,Deepfakes,ff,,12.5,0,80,80\n"
    )
    minimal = "crop_path,x1,y1,x2,y2,label\n/abs/c.jpg,1,2,3,4,FAKE\n\nrel/d.jpg,0,0,1e3,2e3,real\n"
    out = []
    for name, text in [("full.csv", full), ("minimal.csv", minimal)]:
        path = folder / name
        path.write_text(text, encoding="utf-8")
        out.append(path)
    return out


def write_configs(folder: Path, repo_configs: Path | None = None) -> list[Path]:
    """Training YAMLs: the repository's ``configs/*.yaml`` when present, plus a small hand-written one."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    if repo_configs is not None and repo_configs.is_dir():
        for src in sorted(repo_configs.glob("*.yaml")):
            path = folder / src.name
            path.write_bytes(src.read_bytes())
            out.append(path)
    small = folder / "small.yaml"
    small.write_text(
        "model:\n  preset: cross_efficient_vit_v1\n  overrides: {image_size: 96, depth: 1}\n  init: random\n"
        "data:\n  indexes: [faces.csv]\n  mode: labelled\n  val_fraction: 0.1\n"
        "optim:\n  betas: [0.9, 0.99]\ntrain:\n  epochs: 1\n  batch_size: 4\n",
        encoding="utf-8",
    )
    out.append(small)
    return out
