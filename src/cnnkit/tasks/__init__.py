"""Vision tasks built on the backbone interface: localization, detection, segmentation."""
