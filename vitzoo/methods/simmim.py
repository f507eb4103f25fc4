"""SimMIM: `ViTForMaskedImageModeling`, random masking in --mask-patch-size units, L1 on masked pixels.

    python recipes/pretrain.py --method simmim --model vit-base-in21k --scratch --dataset digits --image-size 32 ...

model/ holds the pretraining model (encoder + MIM head); `recipes/finetune.py --model dir` takes its encoder.
"""

from vitzoo.methods.masked import register_masked
from vitzoo.training.arguments import SimMIMArguments

METHOD = register_masked("simmim", SimMIMArguments, rank=2, description=__doc__)
