from reactor.nlp.words import count_words, stopwords, tokens


def test_nltk_english_stopwords_load_offline_from_package_data():
    words = stopwords()
    assert len(words) == 198  # NLTK's current English list
    assert {"the", "and", "shouldn't", "you've"} <= words


def test_tokens_lowercase_drop_stopwords_and_short_words():
    assert tokens("The App is GREAT, but it's slow!! ok") == ["app", "great", "slow"]


def test_counts_and_odd_input():
    assert count_words(None) == {} and count_words("") == {}
    assert count_words("slow slow </s> [SEP] 😀 café 2024 ab") == {"slow": 2, "sep": 1, "café": 1}
    assert count_words("x" * 65 + " fine") == {"fine": 1}  # absurdly long tokens are not words
    assert count_words("ctrl\x01chars\x1bthing") == {"ctrl": 1, "chars": 1, "thing": 1}
