"""BEiT: `BeitForMaskedImageModeling`, blockwise masking of ~40% of patches, visual-token targets from a
tokenizer (default: a k-means codebook of raw patch pixels fitted on this dataset, saved in tokenizer/; see
vitzoo/objectives/tokenizer.py); logs masked-token accuracy.

    python recipes/pretrain.py --method beit --model beit-base-pt22k --scratch --dataset digits --image-size 32 ...

model/ holds the pretraining model (encoder + MIM head); `recipes/finetune.py --model dir` takes its encoder.
"""

from vitzoo.methods.masked import register_masked
from vitzoo.training.arguments import BEiTArguments

METHOD = register_masked("beit", BEiTArguments, rank=1, description=__doc__)
