//! Answer normalisation as the VQA evaluation (and M3AE's `normalize_word`) does it: strip or
//! space punctuation, drop periods not inside numbers, lower-case, number words to digits, drop
//! articles, restore common contractions, drop commas.

const PUNCTUATION: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

const NUMBER_WORDS: [(&str, &str); 11] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
];

const TEN: (&str, &str) = ("ten", "10");

const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The contractions of the VQA evaluation script that can occur in medical answers.
const CONTRACTIONS: [(&str, &str); 16] = [
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldnt", "couldn't"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("isnt", "isn't"),
    ("shouldnt", "shouldn't"),
    ("thats", "that's"),
    ("wasnt", "wasn't"),
    ("werent", "weren't"),
    ("whats", "what's"),
    ("wont", "won't"),
    ("wouldnt", "wouldn't"),
];

/// True if a comma sits between two digits somewhere (VQA's `comma_strip`).
fn has_digit_comma_digit(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit())
}

pub fn normalize_answer(answer: &str) -> String {
    let mut text = answer.to_string();
    let comma_digits = has_digit_comma_digit(answer);
    for p in PUNCTUATION {
        let glued = answer.contains(&format!("{p} ")) || answer.contains(&format!(" {p}"));
        text = text.replace(p, if glued || comma_digits { "" } else { " " });
    }
    // Periods go unless a digit follows (so "2.5" keeps its point).
    let chars: Vec<char> = text.chars().collect();
    let text: String = chars
        .iter()
        .enumerate()
        .filter(|&(k, &c)| c != '.' || chars.get(k + 1).is_some_and(|n| n.is_ascii_digit()))
        .map(|(_, &c)| c)
        .collect();
    let words: Vec<String> = text
        .to_lowercase()
        .split_whitespace()
        .map(|w| {
            NUMBER_WORDS
                .iter()
                .chain(std::iter::once(&TEN))
                .find(|(word, _)| *word == w)
                .map_or(w, |(_, digit)| *digit)
                .to_string()
        })
        .filter(|w| !ARTICLES.contains(&w.as_str()))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(from, _)| *from == w)
                .map_or(w.clone(), |(_, to)| to.to_string())
        })
        .collect();
    words.join(" ").replace(',', "")
}

/// An answer from JSON: strings as they are, numbers and booleans as Python's `str()` writes
/// them (so `1` stays "1" and `true` becomes "True" before normalising).
pub fn answer_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        serde_json::Value::Bool(true) => Some("True".into()),
        serde_json::Value::Bool(false) => Some("False".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_vqa_rules() {
        assert_eq!(normalize_answer("Yes"), "yes");
        assert_eq!(normalize_answer("The Left Lung."), "left lung");
        assert_eq!(normalize_answer("two"), "2");
        assert_eq!(normalize_answer("an X-ray"), "x ray");
        assert_eq!(normalize_answer("2.5 cm"), "2.5 cm");
        assert_eq!(normalize_answer("1,000"), "1000");
        assert_eq!(normalize_answer("left, right"), "left right");
        assert_eq!(normalize_answer("dont know"), "don't know");
        assert_eq!(normalize_answer("  CT  "), "ct");
        assert_eq!(normalize_answer("(axial)"), "axial");
    }

    #[test]
    fn json_answers_are_cast_like_python_str() {
        assert_eq!(answer_text(&serde_json::json!(3)).as_deref(), Some("3"));
        assert_eq!(answer_text(&serde_json::json!("No")).as_deref(), Some("No"));
        assert_eq!(answer_text(&serde_json::json!(null)), None);
    }
}
