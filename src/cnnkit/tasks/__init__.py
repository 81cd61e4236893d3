"""Vision tasks built on the backbone interface: localization, detection, segmentation.

- ``localization``: a class and one box per image;
- ``detection``: a YOLO-style detector (anchors, box coding, NMS, mAP);
- ``segmentation``: per-pixel classes and instance masks;
- ``fully_conv``: a trained classifier's dense layers as convolutions (class-score maps).

Each task package's ``cli`` module plugs into ``cnnkit train --task ...``.
"""
