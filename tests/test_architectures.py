import keras
import numpy as np
import pytest

from ensemble.architectures import RECIPES, build_model, build_network, compile_model, get_recipe


@pytest.mark.parametrize("name, params", [("cnn11", 1_284_426), ("bn_cnn", 327_242), ("keras_mnist", 1_199_882)])
def test_parameter_counts(name, params):
    assert build_network(name).count_params() == params
    assert build_model(name, augment="idg", seed=0).count_params() == params  # scaling/augmentation add none


def test_cnn11_is_the_reference_recipe():
    network = build_network("cnn11")
    convs = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 32, 64, 64, 64, 128, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert [type(layer).__name__ for layer in network.layers[-4:]] == ["Flatten", "Dropout", "Dense", "Dense"]
    assert network.layers[-3].rate == 0.2 and network.layers[-1].activation.__name__ == "softmax"
    recipe = get_recipe("cnn11")
    assert (recipe.optimizer, recipe.learning_rate, recipe.epochs, recipe.batch_size) == ("adam", 1e-4, 50, 64)


@pytest.mark.parametrize("name", list(RECIPES))
def test_models_take_raw_pixels_and_output_probabilities(name):
    model = compile_model(build_model(name, augment="idg", seed=0), get_recipe(name))
    assert model.loss.get_config()["from_logits"] is False  # the seed notebook's from_logits=True bug
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28, 1)).astype("float32")
    probs = np.asarray(model.predict(pixels, verbose=0))
    assert probs.shape == (3, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()


def test_unknown_model_is_named():
    with pytest.raises(KeyError, match="unknown model 'resnet'; choose one of cnn11, bn_cnn, keras_mnist"):
        get_recipe("resnet")
