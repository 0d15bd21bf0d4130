//! The loss-against-compute curve: reads off a known curve exactly, takes the first crossing,
//! and never extrapolates.

use strata_stats::curve::{Curve, OutOfRange};

/// A curve that is exactly linear in log compute: `L = 3 - 0.1 ln c`.
fn log_linear(c: f64) -> f64 {
    3.0 - 0.1 * c.ln()
}

#[test]
fn a_log_linear_curve_is_read_off_exactly_both_ways() {
    let curve = Curve::new([1e9, 4e9, 1e10, 3e10].map(|c| (c, log_linear(c))));
    for c in [1e9, 2e9, 5.5e9, 1e10, 2.9e10, 3e10] {
        let loss = log_linear(c);
        let found = curve.compute_to_reach(loss).unwrap();
        assert!((found / c - 1.0).abs() < 1e-9, "{c}: {found}");
        assert!((curve.loss_at(c).unwrap() - loss).abs() < 1e-12);
    }
}

#[test]
fn points_are_sorted_and_the_first_crossing_is_taken() {
    // A bump: the curve comes down to 2.0 at 2e9, rises to 2.2 and falls again.
    let curve = Curve::new([(4e9, 2.2), (1e9, 3.0), (8e9, 1.5), (2e9, 2.0)]);
    assert_eq!(curve.points()[0], (1e9, 3.0));
    let c = curve.compute_to_reach(2.1).unwrap();
    let expected = (1e9f64.ln() + (3.0 - 2.1) / (3.0 - 2.0) * (2e9f64.ln() - 1e9f64.ln())).exp();
    assert!((c / expected - 1.0).abs() < 1e-12, "{c} vs {expected}");
}

#[test]
fn nothing_is_extrapolated() {
    let curve = Curve::new([(1e9, 3.0), (2e9, 2.5), (4e9, 2.2)]);
    assert!(matches!(
        curve.compute_to_reach(3.1),
        Err(OutOfRange::AboveFirst { .. })
    ));
    let err = curve.compute_to_reach(2.1).unwrap_err();
    assert!(matches!(err, OutOfRange::NeverReached { lowest, .. } if lowest == 2.2));
    assert!(err.to_string().contains("never reached"), "{err}");
    assert!(err.to_string().contains("not extrapolated"), "{err}");
    for c in [0.5e9, 4.1e9] {
        assert!(matches!(
            curve.loss_at(c),
            Err(OutOfRange::ComputeOutside { .. })
        ));
    }
    // The ends themselves are measured, not extrapolated.
    assert_eq!(curve.loss_at(4e9).unwrap(), 2.2);
    assert_eq!(curve.compute_to_reach(3.0).unwrap(), 1e9);
    assert!(matches!(
        Curve::new([]).compute_to_reach(1.0),
        Err(OutOfRange::Empty)
    ));
    // Points without a positive finite compute or a finite loss are not measurements.
    assert_eq!(Curve::new([(0.0, 1.0), (1.0, f64::NAN)]).points().len(), 0);
}
