//! A quick run of the `domain_adaptation` example (point-cloud dictionaries, DaDiL).

#[path = "../../examples/domain_adaptation.rs"]
#[allow(dead_code)]
mod da;

#[test]
fn domain_adaptation_example_quick() {
    // Writes its figure into out/domain_adaptation/, as the example does.
    let r = da::run(true).unwrap();
    assert!(r.target_accuracy.is_finite() && (0.0..=1.0).contains(&r.target_accuracy));
    assert!(r.baseline_accuracy.is_finite() && (0.0..=1.0).contains(&r.baseline_accuracy));
    assert!(r.loss_first_last.1 < r.loss_first_last.0);
    // The point of the example, on its fixed seeds (measured: 1.0 against 0.544).
    assert!(r.target_accuracy > r.baseline_accuracy, "{r:?}");
    assert!(r.figure.exists());
}
