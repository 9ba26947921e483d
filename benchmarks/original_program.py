"""The original program, as published, run as a script: `python benchmarks/original_program.py`.

The reference of `python -m benchmarks.cli`. Its code is the published loop line for line (its
comments translated and shortened); matplotlib draws the error curve at the end as it does there
(MPLBACKEND=Agg makes plt.show() return at once).
"""

import copy

import matplotlib.pyplot as plt
import numpy as np

np.random.seed(0)  # fixed seed, so every run gets the same result


# sigmoid
def sigmoid(x):
    output = 1 / (1 + np.exp(-x))
    return output


# the sigmoid's derivative, from its output
def sigmoid_output_to_derivative(output):
    return output * (1 - output)


# training data
int2binary = {}
binary_dim = 8
largest_number = pow(2, binary_dim)  # 2 ** 8: 256 numbers
binary = np.unpackbits(
    np.array([range(largest_number)], dtype=np.uint8).T, axis=1)
for i in range(largest_number):
    int2binary[i] = binary[i]  # 0..255 to their binary digits

# settings
alpha = 0.1  # learning rate
input_dim = 2  # two numbers are added
hidden_dim = 16  # hidden units: the memory
output_dim = 1
EPOCHS = 10000  # training updates
Eval = 100  # check every Eval updates

# random initial weights
w_i = 2 * np.random.random((hidden_dim, input_dim)) - 1  # (16, 2)
w_o = 2 * np.random.random((output_dim, hidden_dim)) - 1  # (1, 16)
w_h = 2 * np.random.random((hidden_dim, hidden_dim)) - 1  # (16, 16)
w_i_update = np.zeros_like(w_i)
w_o_update = np.zeros_like(w_o)
w_h_update = np.zeros_like(w_h)

# training
error_num_list = []
for j in range(EPOCHS):
    # two random numbers below 128 (so the sum does not overflow) and their sum as the label
    a_int = np.random.randint(largest_number / 2)
    a = int2binary[a_int]
    b_int = np.random.randint(largest_number / 2)
    b = int2binary[b_int]
    label_int = a_int + b_int
    label = int2binary[label_int]
    prediction = np.zeros_like(label)
    overallError = 0
    layer_2_deltas = list()  # output errors
    layer_2_values = list()  # outputs
    layer_1_values = list()  # hidden states
    layer_1_values.append(copy.deepcopy(np.zeros((hidden_dim, 1))))  # h_0 = 0
    # forward
    for i in range(binary_dim):
        X = np.array([[a[binary_dim - i - 1], b[binary_dim - i - 1]]]).T  # (2, 1)
        y = np.array([[label[binary_dim - i - 1]]]).T  # (1, 1)
        layer_1 = sigmoid(np.dot(w_h, layer_1_values[-1]) + np.dot(w_i, X))
        layer_1_values.append(copy.deepcopy(layer_1))
        layer_2 = sigmoid(np.dot(w_o, layer_1))
        error = -(y - layer_2)  # d loss / d pred for loss = 1/2 (y - pred)^2
        layer_delta2 = error * sigmoid_output_to_derivative(layer_2)
        layer_2_deltas.append(copy.deepcopy(layer_delta2))
        prediction[binary_dim - i - 1] = np.round(layer_2[0][0])
    future_layer_1_delta = np.zeros((hidden_dim, 1))
    # backward, most significant bit first
    for i in range(binary_dim):
        X = np.array([[a[i], b[i]]]).T
        prev_layer_1 = layer_1_values[-i - 2]
        layer_1 = layer_1_values[-i - 1]
        layer_delta2 = layer_2_deltas[-i - 1]
        layer_delta1 = np.multiply(np.add(np.dot(w_h.T, future_layer_1_delta), np.dot(w_o.T, layer_delta2)), sigmoid_output_to_derivative(layer_1))  # noqa: E501
        w_i_update += np.dot(layer_delta1, X.T)
        w_h_update += np.dot(layer_delta1, prev_layer_1.T)
        w_o_update += np.dot(layer_delta2, layer_1.T)
        future_layer_1_delta = layer_delta1
    w_i -= alpha * w_i_update
    w_h -= alpha * w_h_update
    w_o -= alpha * w_o_update
    w_i_update *= 0
    w_o_update *= 0
    w_h_update *= 0
    # check
    if (j % Eval == 0):
        overallError = sum([1 if prediction[i] != label[i] else 0 for i in range(binary_dim)])
        error_num_list.append(overallError)
        print("Error:" + str(overallError))
        print("Pred:" + str(prediction))
        print("True:" + str(label))
        out = 0
        for index, x in enumerate(reversed(prediction)):  # binary back to decimal
            out += x * pow(2, index)
        print(str(a_int) + " + " + str(b_int) + " = " + str(out))
        print("------------")
plt.plot(np.arange(len(error_num_list)) * Eval, error_num_list)
plt.ylabel('Error numbers')
plt.xlabel('Epochs')
plt.show()
