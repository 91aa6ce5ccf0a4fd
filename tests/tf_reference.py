"""AnimeGANv2's generator written with TensorFlow ops, as the original net/generator.py
builds it (tf.compat.v1 in place of tf.contrib), with random weights: saves a TF1
checkpoint with the official variable names and styles an image with it.

Run by tests/test_tfimport.py in a process of its own (TensorFlow is a test-only
dependency, and the project's own import must run without it):

    python tests/tf_reference.py CHECKPOINT_PREFIX INPUT.npy OUTPUT.npy [SEED]

INPUT.npy is a (1, H, W, 3) float32 image in [-1, 1]; OUTPUT.npy gets the generator's
output in [-1, 1].
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1
RNG = np.random.default_rng(int(sys.argv[4]) if len(sys.argv) > 4 else 0)


def variable(name: str, shape: list[int], kind: str, scale: float = 1.0) -> tf.Variable:
    """A variable with random values of a trained network's rough scale."""
    if kind == "kernel":
        fan_in = int(np.prod(shape[:-1])) if name != "w" else shape[0] * shape[1]
        value = RNG.normal(0, scale * np.sqrt(2.0 / fan_in), shape)
    elif kind == "gamma":
        value = 1 + RNG.normal(0, 0.2, shape)
    else:
        value = RNG.normal(0, 0.2, shape)
    return tf1.get_variable(name, initializer=tf.constant(value.astype(np.float32)))


def layer_norm(x, scope=None):
    """tf.contrib.layers.layer_norm(center=True, scale=True): moments over H, W and C of
    each image, per-channel beta and gamma, variance_epsilon 1e-12."""
    with tf1.variable_scope(scope, default_name="LayerNorm"):
        channels = int(x.shape[-1])
        beta = variable("beta", [channels], "beta")
        gamma = variable("gamma", [channels], "gamma")
        mean, var = tf.nn.moments(x, [1, 2, 3], keepdims=True)
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, 1e-12)


def lrelu(x):
    return tf.nn.leaky_relu(x, 0.2)


def conv2d(inputs, filters, kernel_size=3, strides=1, scale=1.0):
    """The original Conv2D: reflect padding chosen by kernel and stride, then
    tf.contrib.layers.conv2d (scope Conv, Conv_1, ...; VALID; no bias)."""
    if kernel_size == 3 and strides == 1:
        inputs = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    if kernel_size == 7 and strides == 1:
        inputs = tf.pad(inputs, [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
    if strides == 2:
        inputs = tf.pad(inputs, [[0, 0], [0, 1], [0, 1], [0, 0]], mode="REFLECT")
    with tf1.variable_scope(None, default_name="Conv"):
        shape = [kernel_size, kernel_size, int(inputs.shape[-1]), filters]
        weights = variable("weights", shape, "kernel", scale)
        return tf.nn.conv2d(inputs, weights, [1, strides, strides, 1], "VALID")


def conv_norm_lrelu(inputs, filters, kernel_size=3, strides=1):
    return lrelu(layer_norm(conv2d(inputs, filters, kernel_size, strides)))


def dwise_conv(inputs, name):
    inputs = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    with tf1.variable_scope(name):
        channels = int(inputs.shape[-1])
        w = variable("w", [3, 3, channels, 1], "kernel")
        conv = tf.nn.depthwise_conv2d(inputs, w, [1, 1, 1, 1], "VALID")
        return tf.nn.bias_add(conv, variable("bias", [channels], "beta"))


def inverted_res_block(inputs, output_dim, name):
    with tf1.variable_scope(name):
        net = conv_norm_lrelu(inputs, 2 * int(inputs.shape[-1]), kernel_size=1)
        net = lrelu(layer_norm(dwise_conv(net, name), scope="1"))
        net = layer_norm(conv2d(net, output_dim, kernel_size=1), scope="2")
        return inputs + net if int(inputs.shape[-1]) == output_dim else net


def upsample(inputs, filters):
    """The original Unsample: TF1 resize_images (bilinear, no half-pixel centres) to 2x."""
    size = [2 * tf.shape(inputs)[1], 2 * tf.shape(inputs)[2]]
    return conv_norm_lrelu(tf1.image.resize_images(inputs, size), filters)


def g_net(x):
    with tf1.variable_scope("G_MODEL"):
        with tf1.variable_scope("A"):
            x = conv_norm_lrelu(x, 32, 7)
            x = conv_norm_lrelu(x, 64, strides=2)
            x = conv_norm_lrelu(x, 64)
        with tf1.variable_scope("B"):
            x = conv_norm_lrelu(x, 128, strides=2)
            x = conv_norm_lrelu(x, 128)
        with tf1.variable_scope("C"):
            x = conv_norm_lrelu(x, 128)
            for i in range(1, 5):
                x = inverted_res_block(x, 256, f"r{i}")
            x = conv_norm_lrelu(x, 128)
        with tf1.variable_scope("D"):
            x = upsample(x, 128)
            x = conv_norm_lrelu(x, 128)
        with tf1.variable_scope("E"):
            x = upsample(x, 64)
            x = conv_norm_lrelu(x, 64)
            x = conv_norm_lrelu(x, 32, 7)
        with tf1.variable_scope("out_layer"):
            # Scaled down so that tanh is not saturated: the comparison then sees every layer.
            return tf.tanh(conv2d(x, 3, kernel_size=1, scale=0.3))


def main(prefix: str, image_in: str, image_out: str) -> None:
    tf1.disable_eager_execution()
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    image = np.load(image_in)
    placeholder = tf1.placeholder(tf.float32, [1, None, None, 3], name="generator_input")
    with tf1.variable_scope("generator"):
        fake = g_net(placeholder)
    saver = tf1.train.Saver(tf1.trainable_variables(), write_version=tf1.train.SaverDef.V2)
    with tf1.Session() as sess:
        sess.run(tf1.global_variables_initializer())
        saver.save(sess, prefix, write_meta_graph=False)
        np.save(image_out, sess.run(fake, {placeholder: image}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
