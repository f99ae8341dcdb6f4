"""Entry point of segcore-plugin-datasets."""

from segcore import Registry, hookimpl

from .loaders import ADE20K, BDD100K, COCOStuff, CamVid, Cityscapes, Mapillary, RootConfig, VOCAug


@hookimpl
def segcore_register(registry: Registry) -> None:
    for cls, name in ((CamVid, "camvid"), (Cityscapes, "cityscapes"), (VOCAug, "voc_aug"), (ADE20K, "ade20k"),
                      (Mapillary, "mapillary"), (COCOStuff, "coco_stuff"), (BDD100K, "bdd100k")):  # fmt: skip
        registry.add(cls, name=name, config=RootConfig)
