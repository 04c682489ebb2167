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
PEFT_NAMES = ("lora", "ia3", "prompt", "prefix", "adapter")  # method.peft.name (orca/adapters.py)
# Each adapter's own options in method.peft (besides name and lr, the optimiser's business).
PEFT_OPTIONS = {"lora": ("r", "alpha", "dropout", "target_modules"), "ia3": ("target_modules",),
                "prompt": ("num_tokens",), "prefix": ("num_tokens", "projection"), "adapter": ("size", "target_modules")}
