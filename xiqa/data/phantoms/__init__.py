"""Seeded synthetic phantoms, written in exactly the real distribution formats (SPEC 2.3), that
behave like the modalities rather than being made easy.

The same import code reads phantoms and real data: :func:`write_objectcxr` writes ``train/``,
``dev/`` JPEGs with ``train.csv`` / ``dev.csv``; :func:`write_lvot` writes a ``manifest.csv`` with
PNG slices and PNG masks. ``docs/PHANTOMS.md`` shows contact sheets (``scripts/contact_sheets.py``).

- :mod:`~xiqa.data.phantoms.chest`           Object-CXR: the chest "patients", the images, the folder
- :mod:`~xiqa.data.phantoms.chest_objects`   the foreign objects and the distractors on a chest
- :mod:`~xiqa.data.phantoms.cardiac`         LVOT: the 4-chamber slices, their masks, the manifest
- :mod:`~xiqa.data.phantoms.fields`          the seeded random streams and smooth random fields


Both datasets: labels are a seeded balanced permutation; the background of an image comes from
its own stream seeded by ``(seed, index)`` and drawn identically whatever the label, and the
objects from a separate stream, so a positive differs from its negative twin only inside its
boxes (Object-CXR) or on its mask (LVOT). Nothing here is tuned to make a method score well.

Determinism: numpy ``Generator`` streams, fixed JPEG settings (quality 95, no subsampling, no
EXIF) and PNGs without timestamps, so a seed gives the same bytes on the same library versions.
"""

from xiqa.data.phantoms.cardiac import lvot_slice, write_lvot
from xiqa.data.phantoms.chest import objectcxr_image, write_objectcxr

__all__ = ["lvot_slice", "objectcxr_image", "write_lvot", "write_objectcxr"]
