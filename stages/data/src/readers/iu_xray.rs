//! IU X-ray / Open-i (data-sources.md §3.8): one report XML per study (`ecgen-radiology/*.xml`)
//! with `<AbstractText Label=...>` sections, `<MeSH><major>` terms and `<parentImage id=...>`
//! references; images (`NLMCXR_png`) are named `<parentImage id>.png`. One record per report
//! with an image; the text is FINDINGS + IMPRESSION, the label the first MeSH major head.

use std::path::{Path, PathBuf};

use super::{ImageRef, RawRecord, RawSource, collapse_whitespace, read_text};
use crate::error::DataError;

pub const LICENCE: &str = "IU X-ray / Open-i (Demner-Fushman et al. 2016): CC BY-NC-ND 4.0; read at run time, do not redistribute derived text";

/// One parsed report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IuReport {
    pub id: String,
    pub comparison: String,
    pub indication: String,
    pub findings: String,
    pub impression: String,
    /// `<major>` terms as written ("Cardiomegaly/mild", "normal").
    pub major: Vec<String>,
    pub automatic: Vec<String>,
    pub images: Vec<String>,
}

impl IuReport {
    /// The head of the first MeSH major term, lower-cased ("cardiomegaly", "normal").
    pub fn primary_label(&self) -> String {
        self.major
            .first()
            .and_then(|m| m.split('/').next())
            .map_or_else(|| "normal".into(), |h| h.trim().to_ascii_lowercase())
    }

    pub fn text(&self) -> String {
        let mut parts = Vec::new();
        if !self.findings.is_empty() {
            parts.push(format!("FINDINGS: {}", self.findings));
        }
        if !self.impression.is_empty() {
            parts.push(format!("IMPRESSION: {}", self.impression));
        }
        parts.join(" ")
    }
}

pub fn parse_report(path: &Path) -> Result<IuReport, DataError> {
    let text = read_text(path)?;
    let doc = roxmltree::Document::parse(&text)
        .map_err(|err| DataError::format(path, format!("malformed XML: {err}")))?;
    let mut report = IuReport::default();
    for node in doc.descendants().filter(|n| n.is_element()) {
        match node.tag_name().name() {
            "uId" => report.id = node.attribute("id").unwrap_or("").to_string(),
            "AbstractText" => {
                let body = collapse_whitespace(node.text().unwrap_or(""));
                match node
                    .attribute("Label")
                    .unwrap_or("")
                    .to_ascii_uppercase()
                    .as_str()
                {
                    "COMPARISON" => report.comparison = body,
                    "INDICATION" => report.indication = body,
                    "FINDINGS" => report.findings = body,
                    "IMPRESSION" => report.impression = body,
                    _ => {}
                }
            }
            "major" => report
                .major
                .push(node.text().unwrap_or("").trim().to_string()),
            "automatic" => report
                .automatic
                .push(node.text().unwrap_or("").trim().to_string()),
            "parentImage" => {
                if let Some(id) = node.attribute("id") {
                    report.images.push(id.to_string());
                }
            }
            _ => {}
        }
    }
    if report.id.is_empty() {
        return Err(DataError::format(
            path,
            "no `<uId id=...>`: not an IU X-ray report",
        ));
    }
    Ok(report)
}

/// The report XML files under `root` (`ecgen-radiology/` or `root` itself), sorted.
pub fn report_files(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    let dir = if root.join("ecgen-radiology").is_dir() {
        root.join("ecgen-radiology")
    } else {
        root.to_path_buf()
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(DataError::io(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
        .collect();
    // Numeric order (1.xml, 2.xml, 10.xml), then by name.
    files.sort_by_key(|p| {
        (
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok()),
            p.clone(),
        )
    });
    if files.is_empty() {
        return Err(DataError::format(
            &dir,
            "no report .xml files: not an IU X-ray folder",
        ));
    }
    Ok(files)
}

fn find_image(root: &Path, id: &str) -> Option<PathBuf> {
    ["images", "NLMCXR_png", "."]
        .iter()
        .flat_map(|dir| ["png", "jpg"].map(|ext| root.join(dir).join(format!("{id}.{ext}"))))
        .find(|p| p.exists())
}

pub fn read(root: &Path) -> Result<RawSource, DataError> {
    let mut records = Vec::new();
    for path in report_files(root)? {
        let report = parse_report(&path)?;
        let Some(first) = report.images.first() else {
            continue;
        };
        let image = find_image(root, first).ok_or_else(|| {
            DataError::record(
                &path,
                report.id.clone(),
                format!(
                    "no image `{first}.png` under {}/images or NLMCXR_png",
                    root.display()
                ),
            )
        })?;
        records.push(RawRecord {
            id: report.id.clone(),
            image: ImageRef::File(image),
            text: report.text(),
            label: report.primary_label(),
            split: None,
            questions: Vec::new(),
        });
    }
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
