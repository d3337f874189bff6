"""Mesh export and import: Wavefront OBJ (+ MTL + texture PNG) and PLY.

Files are standard: MeshLab and Blender open them. Conventions:

* vertices float [N, 3], written with 6 decimals;
* faces int [T, 3], 0-based in memory, 1-based in OBJ;
* UVs float [U, 2] in [0, 1]², v up (OBJ convention); per-corner UV ids
  ``face_uv`` [T, 3] allow seams;
* texture images uint8 [H, W, 3] (or float in [0, 1]), row 0 = top, so UV
  v = 1 maps to row 0;
* PLY vertex colours uint8 RGB.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass
class Mesh:
    """A triangle mesh read back from a file (numpy arrays, 0-based ids).

    Attributes:
      vertices: float64 [N, 3].
      faces: int64 [T, 3].
      uv: float64 [U, 2] or None.
      face_uv: int64 [T, 3] or None.
      normals: float64 [N', 3] or None.
      colors: uint8 [N, 3] or None (PLY vertex colours).
      material_library: the ``mtllib`` file name of an OBJ, or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    face_uv: np.ndarray | None = None
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    material_library: str | None = None


class MeshFormatError(ValueError):
    """A mesh file could not be parsed (the message names file and line)."""


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be [N, 3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [T, 3], got {faces.shape}")
    if not np.all(np.isfinite(vertices)):
        raise ValueError("vertices contain NaN or Inf")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"faces index out of range [0, {len(vertices)})")
    return vertices, faces.astype(np.int64)


def _to_uint8_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"texture must be [H, W, 3], got {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.nan_to_num(image.astype(np.float64)) * 255.0 + 0.5, 0, 255)
        image = image.astype(np.uint8)
    return image[..., :3]


def save_png(path: str, image: np.ndarray) -> None:
    """Write an RGB image (uint8, or float in [0, 1]) [H, W, 3] as PNG."""
    import cv2

    image = _to_uint8_image(image)
    if not cv2.imwrite(path, np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"could not write {path}")


def write_obj(path: str, vertices: np.ndarray, faces: np.ndarray,
              uv: np.ndarray | None = None, face_uv: np.ndarray | None = None,
              normals: np.ndarray | None = None, texture: np.ndarray | None = None,
              material_name: str = "face", texture_name: str | None = None) -> None:
    """Write an OBJ; with ``texture`` also ``<stem>.mtl`` and the texture PNG.

    Args:
      path: output ``.obj`` path.
      vertices: float [N, 3].
      faces: int [T, 3], 0-based.
      uv: float [U, 2] in [0, 1]², v up; requires ``face_uv``.
      face_uv: int [T, 3], 0-based ids into ``uv``.
      normals: optional float [N, 3] per-vertex normals.
      texture: optional albedo map [H, W, 3] (uint8, or float in [0, 1]).
      material_name: the MTL material name.
      texture_name: the texture's file name beside the OBJ (default
        ``<stem>_albedo.png``).
    """
    vertices, faces = _check_mesh(vertices, faces)
    if (uv is None) != (face_uv is None):
        raise ValueError("uv and face_uv must be given together")
    if uv is not None:
        uv = np.asarray(uv, np.float64)
        face_uv = np.asarray(face_uv, np.int64)
        if uv.ndim != 2 or uv.shape[1] != 2 or face_uv.shape != faces.shape:
            raise ValueError(f"uv must be [U, 2] and face_uv {faces.shape}; got "
                             f"{uv.shape}, {face_uv.shape}")
        if face_uv.size and (face_uv.min() < 0 or face_uv.max() >= len(uv)):
            raise ValueError(f"face_uv index out of range [0, {len(uv)})")
    stem = os.path.splitext(os.path.basename(path))[0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lines = []
    if texture is not None:
        mtl_name, png_name = f"{stem}.mtl", texture_name or f"{stem}_albedo.png"
        save_png(os.path.join(os.path.dirname(os.path.abspath(path)), png_name), texture)
        with open(os.path.join(os.path.dirname(os.path.abspath(path)), mtl_name), "w") as f:
            f.write(f"newmtl {material_name}\nKa 1.0 1.0 1.0\nKd 1.0 1.0 1.0\n"
                    f"Ks 0.0 0.0 0.0\nillum 1\nmap_Kd {png_name}\n")
        lines.append(f"mtllib {mtl_name}")
    lines.extend("v %.6f %.6f %.6f" % tuple(v) for v in vertices)
    if uv is not None:
        lines.extend("vt %.6f %.6f" % tuple(t) for t in uv)
    if normals is not None:
        normals = np.asarray(normals, np.float64)
        if normals.shape != vertices.shape:
            raise ValueError(f"normals must be {vertices.shape}, got {normals.shape}")
        lines.extend("vn %.6f %.6f %.6f" % tuple(n) for n in normals)
    if texture is not None:
        lines.append(f"usemtl {material_name}")
    f1 = faces + 1
    if uv is not None:
        t1 = face_uv + 1
        if normals is not None:
            lines.extend(f"f {a}/{ta}/{a} {b}/{tb}/{b} {c}/{tc}/{c}"
                         for (a, b, c), (ta, tb, tc) in zip(f1, t1))
        else:
            lines.extend(f"f {a}/{ta} {b}/{tb} {c}/{tc}"
                         for (a, b, c), (ta, tb, tc) in zip(f1, t1))
    elif normals is not None:
        lines.extend(f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in f1)
    else:
        lines.extend(f"f {a} {b} {c}" for a, b, c in f1)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_obj(path: str) -> Mesh:
    """Read an OBJ; polygons are fan-triangulated ``(0, i, i+1)``.

    Raises:
      FileNotFoundError: no such file.
      MeshFormatError: a malformed line (named with its number).
    """
    verts, uvs, norms, faces, face_uv = [], [], [], [], []
    mtllib = None
    with open(path, errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            try:
                if parts[0] == "v":
                    verts.append([float(x) for x in parts[1:4]])
                elif parts[0] == "vt":
                    uvs.append([float(x) for x in parts[1:3]])
                elif parts[0] == "vn":
                    norms.append([float(x) for x in parts[1:4]])
                elif parts[0] == "mtllib":
                    mtllib = parts[1]
                elif parts[0] == "f":
                    corners = [c.split("/") for c in parts[1:]]
                    vi = [int(c[0]) for c in corners]
                    ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
                    for k in range(1, len(vi) - 1):
                        faces.append([vi[0], vi[k], vi[k + 1]])
                        face_uv.append([ti[0], ti[k], ti[k + 1]])
            except (ValueError, IndexError) as err:
                raise MeshFormatError(f"{path}:{lineno}: cannot parse {line.strip()!r}") from err
    if not verts:
        raise MeshFormatError(f"{path}: no vertices")
    faces_a = _obj_ids(np.array(faces, np.int64).reshape(-1, 3), len(verts), path)
    mesh = Mesh(np.array(verts, np.float64), faces_a, material_library=mtllib)
    if uvs and face_uv and np.all(np.array(face_uv) != 0):
        mesh.uv = np.array(uvs, np.float64)
        mesh.face_uv = _obj_ids(np.array(face_uv, np.int64), len(uvs), path)
    if norms:
        mesh.normals = np.array(norms, np.float64)
    return mesh


def _obj_ids(ids: np.ndarray, count: int, path: str) -> np.ndarray:
    """1-based (or negative, relative) OBJ indices → 0-based, range-checked."""
    ids = np.where(ids < 0, ids + count, ids - 1)
    if ids.size and (ids.min() < 0 or ids.max() >= count):
        raise MeshFormatError(f"{path}: face index out of range [1, {count}]")
    return ids


def write_ply(path: str, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None) -> None:
    """Write a binary little-endian PLY with optional per-vertex RGB colours.

    Args:
      vertices: float [N, 3] (stored as float32).
      faces: int [T, 3], 0-based.
      colors: optional [N, 3], uint8 or float in [0, 1].
    """
    vertices, faces = _check_mesh(vertices, faces)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}",
              "property float x", "property float y", "property float z"]
    vdtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != vertices.shape:
            raise ValueError(f"colors must be {vertices.shape}, got {colors.shape}")
        if colors.dtype != np.uint8:
            colors = np.clip(colors * 255.0 + 0.5, 0, 255).astype(np.uint8)
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        vdtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices",
               "end_header"]
    vdata = np.empty(len(vertices), dtype=vdtype)
    vdata["x"], vdata["y"], vdata["z"] = vertices.T.astype(np.float32)
    if colors is not None:
        vdata["red"], vdata["green"], vdata["blue"] = colors.T
    fdata = np.empty(len(faces), dtype=[("n", "u1"), ("ids", "<i4", (3,))])
    fdata["n"] = 3
    fdata["ids"] = faces
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vdata.tobytes())
        f.write(fdata.tobytes())


def read_ply(path: str) -> Mesh:
    """Read a PLY written by :func:`write_ply` (binary little-endian or ASCII triangles)."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise MeshFormatError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    body = data[end + len(b"end_header\n"):]
    fmt = next((h.split()[1] for h in header if h.startswith("format")), "")
    n_v = n_f = 0
    props, current = [], None
    for h in header:
        p = h.split()
        if p[:1] == ["element"]:
            current = p[1]
            if current == "vertex":
                n_v = int(p[2])
            elif current == "face":
                n_f = int(p[2])
        elif p[:1] == ["property"] and current == "vertex":
            props.append((p[2], p[1]))
    names = [n for n, _ in props]
    if fmt == "ascii":
        rows = body.decode("ascii").split("\n")
        vals = np.array([r.split() for r in rows[:n_v]], np.float64).reshape(n_v, len(props))
        faces = np.array([r.split()[1:4] for r in rows[n_v:n_v + n_f]], np.int64)
        vcols = {n: vals[:, i] for i, n in enumerate(names)}
    elif fmt == "binary_little_endian":
        type_map = {"float": "<f4", "float32": "<f4", "double": "<f8", "uchar": "u1",
                    "uint8": "u1", "int": "<i4"}
        try:
            vdtype = [(n, type_map[t]) for n, t in props]
        except KeyError as err:
            raise MeshFormatError(f"{path}: unsupported vertex property type {err}") from err
        vdata = np.frombuffer(body, dtype=vdtype, count=n_v)
        fdata = np.frombuffer(body, dtype=[("n", "u1"), ("ids", "<i4", (3,))], count=n_f,
                              offset=vdata.nbytes)
        if n_f and np.any(fdata["n"] != 3):
            raise MeshFormatError(f"{path}: only triangle faces are supported")
        faces = fdata["ids"].astype(np.int64)
        vcols = {n: vdata[n] for n in names}
    else:
        raise MeshFormatError(f"{path}: unsupported PLY format {fmt!r}")
    vertices = np.stack([vcols["x"], vcols["y"], vcols["z"]], 1).astype(np.float64)
    colors = None
    if {"red", "green", "blue"} <= set(names):
        colors = np.stack([vcols["red"], vcols["green"], vcols["blue"]], 1).astype(np.uint8)
    return Mesh(vertices, faces.reshape(-1, 3), colors=colors)
