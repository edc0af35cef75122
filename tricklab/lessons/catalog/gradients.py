"""The lesson's opening — vanishing and exploding gradients in deep networks, and the tricks against them."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP, gradient_decades, layer_walk
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import GRADIENT_DECADES, TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

DEPTH = 20
NETS = {
    "sigmoid": {"model.name": "mlp", "model.activation": "sigmoid", "init.scheme": "uniform", "model.norm": "none"},
    "relu+he": {"model.name": "mlp", "model.activation": "relu", "init.scheme": "he", "model.norm": "none"},
    "+batchnorm": {"model.name": "mlp", "model.activation": "relu", "init.scheme": "he", "model.norm": "batch"},
    "+residual": {"model.name": "resnet", "model.activation": "relu", "init.scheme": "he", "model.norm": "batch"},
}
FIXES = ("relu+he", "+batchnorm", "+residual")


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r)]
    if r.init:
        decades = ", ".join(f"{arm} {num(gradient_decades(r, arm), 2)}" for arm in r.arms)
        out.append(f"Decades the weight-gradient std changes from the output layer back to the first at "
                   f"initialisation (mean over seeds): {decades}.")
        for arm in r.arms:
            walk = layer_walk(r, arm, "grad_std")
            grads = r.init_mean(arm, "grad_std")
            if walk and len(grads) >= 2 and grads[0] > 0 and grads[-1] > 0:
                way = ("shrinks towards the input (vanishing)" if grads[0] < grads[-1]
                       else "grows towards the input (exploding)" if grads[0] > grads[-1] else "keeps its size")
                out.append(f"{arm}: the gradient std {way} — {walk}.")
    out.append("Does it matter for training? " + verdict_sentence(r, r.check("accuracy")))
    out.append(f"Test accuracy (best first): {ranking(r, 'test_accuracy')}.")
    for name in FIXES:
        out.append(f"{name}, gradient at initialisation: " + verdict_sentence(r, r.check(name)))
    return out + failed_arms(r)


LESSON = Lesson(
    name="gradients",
    title_de="Deep Learning Training Tricks (Einleitung: verschwindende und explodierende Gradienten)",
    quote_de="Je tiefer neuronale Netzwerke werden, desto herausfordernder wird ihr Training. Ein Hauptproblem sind "
             "die sogenannten verschwindenden Gradienten oder explodierenden Gradienten. […] Da in jeder Schicht "
             "Signale mit einer Matrix W_i multipliziert werden, kann der Gradient je nach ||W_i|| entweder "
             "verschwinden und nahe 0 sein oder unbegrenzt ansteigen.",
    claim="In a deep network the gradient vanishes (or explodes) on its way back through the layers; the tricks of "
          "this lesson — ReLU with He init, batch normalisation, residual connections — keep it in range.",
    definition=f"At initialisation, the number of decades the std of ∂L/∂W changes from the output layer back to "
               f"the first layer, |log10(σ_last/σ_first)|, one batch of 256, in {DEPTH}-layer nets of 64 units on the "
               "digits as 64-feature vectors: a sigmoid MLP with the classic U(±1/√n_in) init, minus the mean of the "
               "three fixes (ReLU + He; + batch norm; + residual connections, a pre-activation residual MLP) per "
               "seed. The claim predicts fewer decades with the fixes, so the difference is negated: positive = the "
               "fixes keep the gradient in range. The test accuracy after training is the second check.",
    base={**DIGITS_MLP, "model": {**DIGITS_MLP["model"], "depth": DEPTH}},
    derived_data="digits-flat",
    factors={"network": NETS},
    checks=(
        Check("gradient_decades", "Do the fixes keep the gradient's size through the depth (fewer decades of "
              "change) at initialisation?", GRADIENT_DECADES, FIXES, ("sigmoid",), expects="lower"),
        Check("accuracy", "Do the fixes give a higher test accuracy than the deep sigmoid net?", TEST_ACCURACY,
              FIXES, ("sigmoid",)),
        *(Check(name, f"{name} vs sigmoid: decades of gradient change", GRADIENT_DECADES, (name,), ("sigmoid",),
                expects="lower") for name in FIXES),
    ),
    full=Variant(seeds=5, epochs=10),
    quick=Variant(seeds=3, epochs=3),
    explain=explain,
    views=("init", "training"),
    tune=False,
    untuned="the claim is measured at initialisation, before any learning rate acts; the accuracy check trains "
            "every net at the recipe's LR",
)
