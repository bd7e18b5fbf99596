"""ISEAR (International Survey on Emotion Antecedents and Reactions) as a plug-in dataset: the worked example
of docs/adding-a-dataset.md. Not in the default run; to use it, put your copy's CSV files in data/isear/ and
add `isear` to `data.datasets` and `isear_plugin` to `data.plugins` in params.yaml.

data/isear/train.csv and data/isear/test.csv: a header row with the columns `text` (what the respondent
wrote) and `emotion` (one of the seven below), one row per response, at least 10 rows per file. The task
`isear_emotion` is prompted as "<instruction>\\n<text>", then "The emotion is", after which each label is
scored (" joy.", " fear.", ...).
"""

from healthslm.data.loaders import csv_text_dataset
from healthslm.data.registry import register

register(
    csv_text_dataset(
        "isear",
        task="emotion",
        files={"train": "train.csv", "eval": "test.csv"},
        text_column="text",
        label_column="emotion",
        label_space=("joy", "fear", "anger", "sadness", "disgust", "shame", "guilt"),
        instruction="Which emotion does the writer describe?",
        answer_prefix="The emotion is",
        license="research use (the ISEAR databank's terms, Swiss Center for Affective Sciences)",
        citation="Scherer & Wallbott, Journal of Personality and Social Psychology 66(2), 1994",
    )
)
