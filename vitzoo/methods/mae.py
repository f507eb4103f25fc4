"""MAE: `ViTMAEForPreTraining` (the encoder sees only the visible patches), --mask-ratio 0.75, normalised-pixel
MSE on masked patches, lr = --blr x total batch / 256 as in the paper (short runs on small data need a larger
--blr, e.g. 3e-3).

    python recipes/pretrain.py --method mae --model mae-base --scratch --dataset digits --image-size 32 ...

model/ holds the pretraining model (encoder + decoder); `recipes/finetune.py --model dir` takes its encoder.
"""

from vitzoo.methods.masked import register_masked
from vitzoo.training.arguments import MAEArguments

METHOD = register_masked("mae", MAEArguments, rank=0, description=__doc__)
