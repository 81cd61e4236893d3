"""What each task trains and scores, on the backbone interface and the one training engine.

- ``classify``: image classes (the course's recipe and the speed presets);
- ``finetune``: a pretrained model's new head, then all its layers;
- ``localization``: a class and one box per image;
- ``detection``: a YOLO-style detector (anchors, box coding, NMS, mAP);
- ``segmentation``: per-pixel classes and instance masks;
- ``fully_conv``: a trained classifier's dense layers as convolutions (class-score maps).

Each task gives ``engine.Trainer`` its batches, losses and validation metrics; the run folders
are made in ``cnnkit.runs`` and the commands in ``cnnkit.cli``.
"""
