from dataclasses import replace

import keras
import numpy as np
import pytest

from ensemble.nets.architectures import NETS, build_model, build_network, compile_model, scaled
from ensemble.nets.recipes import RECIPES, Augmentation, get_recipe, recipe_for

IDG = Augmentation("idg", 0.1, 0.1, 10.0)


@pytest.mark.parametrize("name, params", [
    ("cnn11", 1_284_426), ("bn_cnn", 327_242), ("keras_mnist", 1_199_882),
    # Deotte's net: the 4x4 conv on a 4x4x64 map has exactly the weights of bn_cnn's Dense(128) on its
    # flattened 1024 values (the same net, written two ways): 327,242 both
    ("deotte", 327_242),
    ("seed001", 179_242),   # the notebook's own model.summary(): "Total params: 179,242"
    ("seed004", 41_018),    # 416 + 6,416 + 32,896 + 1,290
    # cnn11's 1,284,426 less its Dense(128) on 7x7x128 (802,944), plus one on 3x3x128 (147,584)
    ("cnn11_pool", 629_066),
])
def test_parameter_counts(name, params):
    assert build_network(name, 10).count_params() == params
    assert build_model(name, 10, IDG, seed=0).count_params() == params  # scaling/augmentation add none


def test_cnn11_is_seed_002s_net():
    network = build_network("cnn11", 10)
    convs = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 32, 64, 64, 64, 128, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert [type(layer).__name__ for layer in network.layers[-4:]] == ["Flatten", "Dropout", "Dense", "Dense"]
    assert network.layers[-3].rate == 0.2 and network.layers[-1].activation.__name__ == "softmax"


def test_cnn11_at_half_width_has_half_the_filters_in_every_conv():
    network = build_network("cnn11", 10, width=0.5)
    convs = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 16, 16, 32, 32, 32, 64, 64, 64]
    # 160 + 2 x 2,320 + 4,640 + 2 x 9,248 + 18,496 + 2 x 36,928 convs, Dense(128) on 7x7x64 401,536, softmax 1,290
    assert network.count_params() == 523_114
    assert build_model("cnn11", 10, IDG, seed=0, width=0.5).count_params() == 523_114


def filters_and_units(network) -> tuple[list[int], list[int]]:
    layers = network.layers
    return ([layer.filters for layer in layers if isinstance(layer, keras.layers.Conv2D)],
            [layer.units for layer in layers if isinstance(layer, keras.layers.Dense)])


@pytest.mark.parametrize("name", list(NETS))
def test_the_width_scales_every_conv_of_every_net_and_leaves_its_dense_layers(name):
    published_filters, published_units = filters_and_units(build_network(name, 10))
    for width in (0.3, 0.5, 2.0):
        filters, units = filters_and_units(build_network(name, 10, width))
        assert filters == [max(1, round(f * width)) for f in published_filters]
        assert units == published_units
    assert filters_and_units(build_network(name, 10, 0.01))[0] == [1] * len(published_filters)  # never no filter


def test_scaled_rounds_to_the_nearest_filter_and_keeps_one():
    assert [scaled(16, 0.3), scaled(32, 0.375), scaled(128, 0.5), scaled(32, 1.0), scaled(3, 0.1)] == [
        5, 12, 64, 32, 1]


def test_cnn11_pool_is_cnn11_pooled_once_more_before_its_dense_layer():
    plain, pooled = build_network("cnn11", 10).layers, build_network("cnn11_pool", 10).layers
    kinds = [type(layer).__name__ for layer in pooled]
    assert kinds == [type(layer).__name__ for layer in plain[:-4]] + ["MaxPooling2D"] + [
        type(layer).__name__ for layer in plain[-4:]]
    assert pooled[-4].output.shape == (None, 3 * 3 * 128)


def test_cnn11_pool_trains_with_cnn11s_recipe():
    recipe = get_recipe("cnn11_pool")
    assert (recipe.name, recipe.net) == ("cnn11_pool", "cnn11_pool")
    assert replace(recipe, name="cnn11", net="cnn11", source=get_recipe("cnn11").source) == get_recipe("cnn11")


def test_deotte_net_as_published():
    convs = [layer for layer in build_network("deotte", 10).layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0], c.strides[0]) for c in convs] == [
        (32, 3, 1), (32, 3, 1), (32, 5, 2), (64, 3, 1), (64, 3, 1), (64, 5, 2), (128, 4, 1)]
    dropouts = [layer.rate for layer in build_network("deotte", 10).layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [0.4, 0.4, 0.4]


def test_seed_recipe_is_seed_002_as_run_and_deotte_is_deottes():
    seed = get_recipe("seed")
    assert (seed.net, seed.optimizer, seed.learning_rate, seed.epochs, seed.batch_size, seed.schedule,
            seed.augmentation, seed.precision, seed.keep) == (
        "cnn11", "adam", 1e-4, 50, 64, "plateau", Augmentation("legacy-idg", 0.1, 0.1, 0.0), "float32", "last")
    deotte = get_recipe("deotte")
    assert (deotte.net, deotte.learning_rate, deotte.epochs, deotte.batch_size, deotte.schedule,
            deotte.augmentation) == ("deotte", 1e-3, 45, 64, "exp", Augmentation("idg", 0.1, 0.1, 10.0))
    assert (get_recipe("seed001").optimizer, get_recipe("seed001").epochs) == ("rmsprop", 5)
    assert (get_recipe("seed004").batch_size, get_recipe("seed004").epochs) == (200, 8)


def test_every_net_has_its_own_recipe_and_model_alone_picks_it():
    assert set(NETS) <= set(RECIPES)
    assert recipe_for(None, "deotte").name == "deotte"
    assert recipe_for("seed", "deotte").name == "seed"  # an explicit recipe wins; the net is overridden
    assert recipe_for(None, None).name == "cnn11"


@pytest.mark.parametrize("name", list(RECIPES))
def test_models_take_raw_pixels_and_output_probabilities(name):
    recipe = get_recipe(name)
    model = compile_model(build_model(recipe.net, 10, recipe.augmentation, seed=0), recipe.optimizer,
                          recipe.learning_rate)
    assert model.loss.get_config()["from_logits"] is False  # the seed notebook's from_logits=True bug
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28, 1)).astype("float32")
    probs = np.asarray(model.predict(pixels, verbose=0))
    assert probs.shape == (3, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()


def test_the_output_layer_has_one_unit_per_class():
    assert build_model("cnn11", 24).output_shape == (None, 24)  # Sign Language MNIST's 24 letters
    assert build_network("seed004", 47).layers[-1].units == 47  # EMNIST balanced


def test_unknown_recipe_and_net_are_named():
    with pytest.raises(KeyError, match="unknown recipe 'resnet'; choose one of cnn11, seed, deotte"):
        get_recipe("resnet")
    with pytest.raises(KeyError, match="unknown net 'resnet'"):
        build_network("resnet", 10)
