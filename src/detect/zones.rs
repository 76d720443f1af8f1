//! Zones: which named areas of a stream's picture (`[[streams.zones]]`) a
//! detection is in, and whether it counts at all.
//!
//! Rule (one, stated once):
//! - An object is in a zone when its box's bottom-centre (the feet point) is
//!   inside the zone's polygon, its label is one of the zone's `labels` (empty:
//!   any) and its score reaches the zone's `min_score` (if any). The feet, not
//!   the box's centre or overlap: a person standing outside a gate zone, whose
//!   head overlaps it in a perspective view, is not in it; where someone stands
//!   is where they are.
//! - If any zone of the stream is `required`, an object in none of the
//!   required zones is dropped (no event). Without required zones every object
//!   counts, in whatever zones it is in (maybe none).
//! - Zones sharing a name are one zone of several polygons: its name is listed once.
//! - Motion is in a zone when the bottom-centre of the moving area is inside
//!   the polygon (labels and scores are for objects; motion is never dropped:
//!   the motion mask is what hides places from motion).
//!
//! Invariants: pure functions of the zones and the detection; polygons are
//! normalised (0..=1, y down) and checked by `config` before they get here.

use super::objects::Detection;
use crate::index::db::Zone;

/// Whether `(x, y)` is inside `poly` (even-odd rule; fewer than 3 points: never).
pub fn inside(poly: &[[f64; 2]], x: f64, y: f64) -> bool {
    if poly.len() < 3 {
        return false;
    }
    let mut odd = false;
    let mut j = poly.len() - 1;
    for (i, &[xi, yi]) in poly.iter().enumerate() {
        let [xj, yj] = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            odd = !odd;
        }
        j = i;
    }
    odd
}

/// The feet point of a `[x0, y0, x1, y1]` box: its bottom-centre.
pub fn feet(bbox: [f32; 4]) -> (f64, f64) {
    let [x0, _, x1, y1] = bbox.map(f64::from);
    ((x0 + x1) / 2.0, y1)
}

/// The names of the zones `d` is in, or None if the stream's required zones drop it.
pub fn of_object(zones: &[Zone], d: &Detection) -> Option<Vec<String>> {
    let (x, y) = feet(d.bbox);
    let counts = |z: &Zone| {
        inside(&z.polygon, x, y)
            && (z.labels.is_empty() || z.labels.iter().any(|l| l == d.label))
            && z.min_score.is_none_or(|s| f64::from(d.score) >= s)
    };
    let hits: Vec<&Zone> = zones.iter().filter(|z| counts(z)).collect();
    if zones.iter().any(|z| z.required) && !hits.iter().any(|z| z.required) {
        return None;
    }
    Some(names(hits.into_iter()))
}

/// The names of `zones`, each once, in their order.
fn names<'a>(zones: impl Iterator<Item = &'a Zone>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for z in zones {
        if !out.contains(&z.name) {
            out.push(z.name.clone());
        }
    }
    out
}

/// The names of the zones a moving area (`[x, y, w, h]`, normalised) is in.
pub fn of_area(zones: &[Zone], [x, y, w, h]: [f64; 4]) -> Vec<String> {
    let (fx, fy) = (x + w / 2.0, y + h);
    names(zones.iter().filter(|z| inside(&z.polygon, fx, fy)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, polygon: &[[f64; 2]], labels: &[&str], min_score: Option<f64>, required: bool) -> Zone {
        Zone {
            name: name.into(),
            polygon: polygon.to_vec(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            min_score,
            required,
        }
    }

    const LEFT: [[f64; 2]; 4] = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]];
    const BOTTOM: [[f64; 2]; 3] = [[0.0, 0.6], [1.0, 0.6], [0.5, 1.0]];

    fn person(bbox: [f32; 4], score: f32) -> Detection {
        Detection { label: "person", score, bbox }
    }

    #[test]
    fn a_point_is_inside_a_concave_polygon_only_where_it_is() {
        // An L shape: the notch at the top right is outside.
        let l = [[0.0, 0.0], [0.4, 0.0], [0.4, 0.6], [1.0, 0.6], [1.0, 1.0], [0.0, 1.0]];
        assert!(inside(&l, 0.2, 0.2));
        assert!(inside(&l, 0.8, 0.8));
        assert!(!inside(&l, 0.8, 0.2), "in the notch");
        assert!(!inside(&l[..2], 0.1, 0.0), "two points are no polygon");
    }

    #[test]
    fn an_object_is_where_its_feet_are() {
        let zones = [zone("left", &LEFT, &[], None, false)];
        // Head and body in the left half, feet in it too.
        assert_eq!(of_object(&zones, &person([0.1, 0.1, 0.3, 0.5], 0.6)), Some(vec!["left".to_string()]));
        // A box spanning both halves whose bottom-centre is on the right.
        assert_eq!(of_object(&zones, &person([0.3, 0.1, 0.9, 0.5], 0.6)), Some(vec![]));
    }

    #[test]
    fn labels_and_scores_narrow_a_zone() {
        let zones = [zone("cars", &LEFT, &["car"], None, false), zone("sure", &LEFT, &[], Some(0.7), false)];
        assert_eq!(of_object(&zones, &person([0.1, 0.1, 0.2, 0.5], 0.6)), Some(vec![]));
        assert_eq!(of_object(&zones, &person([0.1, 0.1, 0.2, 0.5], 0.8)), Some(vec!["sure".to_string()]));
    }

    #[test]
    fn required_zones_drop_objects_outside_them() {
        let zones = [zone("left", &LEFT, &[], None, false), zone("door", &BOTTOM, &[], None, true)];
        assert_eq!(of_object(&zones, &person([0.1, 0.1, 0.2, 0.3], 0.9)), None, "only in an optional zone");
        assert_eq!(
            of_object(&zones, &person([0.4, 0.5, 0.5, 0.9], 0.9)),
            Some(vec!["left".to_string(), "door".to_string()])
        );
        assert_eq!(of_area(&zones, [0.4, 0.5, 0.1, 0.4]), vec!["left".to_string(), "door".to_string()]);
        assert_eq!(of_area(&zones, [0.6, 0.0, 0.1, 0.1]), Vec::<String>::new());
    }

    #[test]
    fn zones_sharing_a_name_are_one_zone() {
        let zones = [zone("yard", &LEFT, &[], None, false), zone("yard", &BOTTOM, &[], None, false)];
        assert_eq!(of_object(&zones, &person([0.4, 0.5, 0.5, 0.9], 0.9)), Some(vec!["yard".to_string()]));
    }
}
