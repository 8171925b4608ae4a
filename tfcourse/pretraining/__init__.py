"""Pre-training objectives: BERT's masked LM and next-sentence pairs, T5's span corruption.

All three turn unlabelled text into (input, target) pairs with a ``torch.Generator``. Random numbers are
drawn on the generator's device and then moved to the data, so a CPU seed gives the same result on a GPU.

**Masked LM** (Devlin et al. 2019, §3.1): select 15 % of the real tokens; replace 80 % of those with
``[MASK]``, 10 % with a random token and leave 10 % unchanged; predict the originals. Only selected
positions carry a label, the rest hold ``-100``, the ``ignore_index`` of ``F.cross_entropy``::

    input_ids   [CLS]  the  cat  sat  on  the  mat  [SEP]
    corrupted   [CLS]  the [MASK] sat  on  dog  mat  [SEP]   <- "dog" random, "mat" kept
    labels      -100  -100  cat -100 -100  the  mat  -100

**Next-sentence prediction** (Devlin et al. 2019, §3.1): pairs ``[CLS] A [SEP] B [SEP]`` in which B is the
sentence after A half of the time (label ``IS_NEXT = 0``, as in Hugging Face's ``BertForPreTraining``) and
a sentence from another document otherwise (label ``NOT_NEXT = 1``).

**Span corruption** (Raffel et al. 2020, §3.1.4): drop about 15 % of the tokens in spans of mean length 3;
the input keeps one sentinel per dropped span, the target lists each sentinel followed by its span::

    tokens   Thank you for inviting me to your party last week
    inputs   Thank you <extra_id_0> me to your party <extra_id_1> week
    targets  <extra_id_0> for inviting <extra_id_1> last
"""

from tfcourse.pretraining._common import IGNORE_INDEX
from tfcourse.pretraining.bert import (
    IS_NEXT,
    NOT_NEXT,
    MaskedLM,
    PackedPair,
    SentencePair,
    mlm_mask,
    nsp_pairs,
    pack_pair,
)
from tfcourse.pretraining.span_corruption import (
    SpanCorruption,
    merge_span_corruption,
    noise_span_counts,
    random_spans_noise_mask,
    span_corruption,
)

__all__ = [
    "IGNORE_INDEX",
    "IS_NEXT",
    "NOT_NEXT",
    "MaskedLM",
    "PackedPair",
    "SentencePair",
    "SpanCorruption",
    "merge_span_corruption",
    "mlm_mask",
    "noise_span_counts",
    "nsp_pairs",
    "pack_pair",
    "random_spans_noise_mask",
    "span_corruption",
]
