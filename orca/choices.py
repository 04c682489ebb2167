"""The names that config options take, read both by the code that acts on them and by the
option schema (orca/schema.py). Nothing here imports torch: preflight reads it before the
run starts."""

OPTIMIZERS = ("adamw", "adam", "sgd")      # finetune.optimizer.name, align.optimizer.name
LOOPS = ("lightning", "orca")              # finetune.loop
ALIGN_SCHEDULES = ("multistep", "orca")    # align.schedule
IMAGE_TRANSFORMS = ("imagenet", "orca")    # align.image_transform
INNER_METHODS = ("exact", "gaussian")      # align.options.inner (OTDD)
SELECT_ON = ("val", "test")                # protocol.select_on
PROTOCOL_DATA = ("ours", "orca")           # protocol.data
POOLS = ("mean", "last")                   # head.pool, method.head_pool
DECODERS = ("linear", "pixel_shuffle")     # head.decoder
EMBEDDER_INITS = {"conv1d": ("default", "orca"), "swin_patch": ("mean", "orca")}  # embedder.init, by embedder
