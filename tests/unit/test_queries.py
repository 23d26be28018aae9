from training.queries import common_root, ground_truth_query, normalize_query


def test_normalize_lowercases_strips_punctuation_and_dedupes() -> None:
    assert normalize_query("Tapes, Adhesives & Sealants Adhesive Tapes Duct Tape") == (
        "tapes adhesives sealants adhesive duct tape"
    )
    assert (
        normalize_query("3D Printing Supplies 3D Printing Filament")
        == "3d printing supplies filament"
    )
    assert normalize_query("  Heat-shrink  Tubing ") == "heat shrink tubing"
    assert normalize_query("") == ""


def test_common_root_is_the_shared_leading_tokens() -> None:
    cats = [
        "Industrial & Scientific Lab & Scientific Products Beakers",
        "Industrial & Scientific Tapes, Adhesives & Sealants Duct Tape",
        "",
    ]
    assert common_root(cats) == "Industrial & Scientific"
    assert common_root(["Only One Category"]) == ""
    assert common_root(["A b", "C d"]) == ""


def test_ground_truth_query_drops_root_and_normalizes() -> None:
    root = "Industrial & Scientific"
    assert ground_truth_query(
        "Industrial & Scientific Lab & Scientific Products Beakers", root
    ) == ("lab scientific products beakers")
    assert ground_truth_query("", root) is None
    assert ground_truth_query("Industrial & Scientific", root) is None
