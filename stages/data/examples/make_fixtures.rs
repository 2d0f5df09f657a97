//! Writes the committed format fixtures under `stages/data/fixtures/` (everything except
//! `dicom/`, which holds pydicom's files). All content is invented; images are 16x16 SynthRad
//! renderings. Run: `cargo run -p umdflow-data --example make_fixtures`.

use std::io::Write;
use std::path::{Path, PathBuf};

use umdflow_data::synthrad::render::render;
use umdflow_data::synthrad::{Domain, SynthConfig, sample_study};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const SIZE: usize = 16;

/// Writes SynthRad study `index` as a 16x16 grey PNG or JPEG (by extension).
fn image(path: &Path, index: u64) -> Result<()> {
    let config = SynthConfig::new(2024, Domain::Source, SIZE);
    let mut pixels = vec![0.0f32; SIZE * SIZE];
    render(&sample_study(&config, index), &config, &mut pixels);
    let bytes: Vec<u8> = pixels.iter().map(|v| (v * 255.0).round() as u8).collect();
    let buffer = image::GrayImage::from_raw(SIZE as u32, SIZE as u32, bytes).ok_or("image size")?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    buffer.save(path)?;
    Ok(())
}

fn text(path: &Path, content: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, content)?;
    Ok(())
}

fn gzip(path: &Path, content: &str) -> Result<()> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(content.as_bytes())?;
    let bytes = encoder.finish()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

fn vqa_rad(root: &Path) -> Result<()> {
    let release = root.join("vqa-rad");
    text(
        &release.join("VQA_RAD Dataset Public.json"),
        r#"[
  {"qid": 1, "phrase_type": "freeform", "qid_linked_id": "0f000000-0000-4000-8000-000000000001", "image_case_url": "https://example.invalid/case/1", "image_name": "synpic00001.jpg", "image_organ": "CHEST", "evaluation": "given", "question": "Is there a pleural effusion on the right?", "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL", "question_type": "PRES", "answer": "Yes", "answer_type": "CLOSED"},
  {"qid": 2, "phrase_type": "para", "qid_linked_id": "0f000000-0000-4000-8000-000000000002", "image_case_url": "https://example.invalid/case/1", "image_name": "synpic00001.jpg", "image_organ": "CHEST", "evaluation": "given", "question": "How many nodules are seen?", "question_rephrase": "Count the nodules.", "question_relation": "NULL", "question_frame": "How many nodules are seen?", "question_type": "COUNT", "answer": 2, "answer_type": "OPEN"},
  {"qid": 3, "phrase_type": "test_freeform", "qid_linked_id": "0f000000-0000-4000-8000-000000000003", "image_case_url": "https://example.invalid/case/2", "image_name": "synpic00002.jpg", "image_organ": "HEAD", "evaluation": "not given", "question": "Where is the lesion located?", "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL", "question_type": "PRES, POS", "answer": "The Left Frontal Lobe.", "answer_type": "OPEN"},
  {"qid": 4, "phrase_type": "test_para", "qid_linked_id": "0f000000-0000-4000-8000-000000000004", "image_case_url": "https://example.invalid/case/2", "image_name": "synpic00002.jpg", "image_organ": "HEAD", "evaluation": "given", "question": "Is this an MRI?", "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL", "question_type": "MODALITY", "answer": "no", "answer_type": "CLOSED"}
]
"#,
    )?;
    image(&release.join("VQA_RAD Image Folder/synpic00001.jpg"), 1)?;
    image(&release.join("VQA_RAD Image Folder/synpic00002.jpg"), 2)?;

    let derived = root.join("vqa-rad-derived");
    text(
        &derived.join("trainset.json"),
        r#"[
  {"qid": 1, "image_name": "synpic00001.jpg", "image_organ": "CHEST", "answer": "Yes", "answer_type": "CLOSED", "question_type": "PRES", "question": "Is there a pleural effusion on the right?", "phrase_type": "freeform"},
  {"qid": 2, "image_name": "synpic00001.jpg", "image_organ": "CHEST", "answer": 2, "answer_type": "OPEN", "question_type": "COUNT", "question": "How many nodules are seen?", "phrase_type": "para"}
]
"#,
    )?;
    text(
        &derived.join("testset.json"),
        r#"[
  {"qid": 3, "image_name": "synpic00002.jpg", "image_organ": "HEAD", "answer": "The Left Frontal Lobe.", "answer_type": "OPEN", "question_type": "PRES, POS", "question": "Where is the lesion located?", "phrase_type": "test_freeform"},
  {"qid": 5, "image_name": "synpic00001.jpg", "image_organ": "CHEST", "answer": "right", "answer_type": "OPEN", "question_type": "POS", "question": "Which side is the effusion on?", "phrase_type": "test_freeform"}
]
"#,
    )?;
    image(&derived.join("images/synpic00001.jpg"), 1)?;
    image(&derived.join("images/synpic00002.jpg"), 2)?;
    Ok(())
}

fn slake(root: &Path) -> Result<()> {
    let dir = root.join("slake");
    text(
        &dir.join("train.json"),
        r#"[
  {"img_id": 0, "img_name": "xmlab0/source.jpg", "question": "What modality is used to take this image?", "answer": "MRI", "q_lang": "en", "location": "Abdomen", "modality": "MRI", "answer_type": "OPEN", "base_type": "vqa", "content_type": "Modality", "triple": ["vhead", "_", "_"], "qid": 100},
  {"img_id": 0, "img_name": "xmlab0/source.jpg", "question": "这张图片是用什么方式拍摄的？", "answer": "核磁共振", "q_lang": "zh", "location": "Abdomen", "modality": "MRI", "answer_type": "OPEN", "base_type": "vqa", "content_type": "Modality", "triple": ["vhead", "_", "_"], "qid": 101},
  {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "How many kidneys are in this image?", "answer": 2, "q_lang": "en", "location": "Abdomen", "modality": "CT", "answer_type": "OPEN", "base_type": "vqa", "content_type": "Quantity", "triple": ["vhead", "_", "_"], "qid": 102}
]
"#,
    )?;
    text(
        &dir.join("validate.json"),
        r#"[
  {"img_id": 2, "img_name": "xmlab2/source.jpg", "question": "Is the lung healthy?", "answer": "No", "q_lang": "en", "location": "Lung", "modality": "X-Ray", "answer_type": "CLOSED", "base_type": "vqa", "content_type": "Abnormality", "triple": ["vhead", "_", "_"], "qid": 103}
]
"#,
    )?;
    text(
        &dir.join("test.json"),
        r#"[
  {"img_id": 3, "img_name": "xmlab3/source.jpg", "question": "Which organ is abnormal?", "answer": "Left Lung", "q_lang": "en", "location": "Chest", "modality": "X-Ray", "answer_type": "OPEN", "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": 104}
]
"#,
    )?;
    for k in 0..4u64 {
        image(&dir.join(format!("imgs/xmlab{k}/source.jpg")), 10 + k)?;
    }
    Ok(())
}

fn medvqa2019(root: &Path) -> Result<()> {
    let dir = root.join("medvqa-2019");
    text(
        &dir.join("train/QA/Modality.csv"),
        "synpic100|what modality is shown?|ct w/contrast (iv)\nsynpic101|what imaging method was used?|mr - t2 weighted\n",
    )?;
    text(
        &dir.join("train/QA/Organ.csv"),
        "synpic100|what organ system is shown?|lung, mediastinum, pleura\n",
    )?;
    text(
        &dir.join("train/QA/Plane.csv"),
        "synpic100|in what plane was this image taken?|axial\nsynpic101|which plane is this image in?|sagittal\n",
    )?;
    text(
        &dir.join("train/QA/Abnormality.csv"),
        "synpic101|is this image abnormal?|yes\n",
    )?;
    text(
        &dir.join("test/QA/Modality.csv"),
        "synpic200|what modality is shown?|xr - plain film\n",
    )?;
    image(&dir.join("train/images/synpic100.jpg"), 20)?;
    image(&dir.join("train/images/synpic101.jpg"), 21)?;
    image(&dir.join("test/images/synpic200.jpg"), 22)?;
    Ok(())
}

fn roco(root: &Path) -> Result<()> {
    let dir = root.join("roco/data/validation/radiology");
    text(
        &dir.join("captions.txt"),
        "ROCO_00001\t Axial computed tomography of the chest showing a right pleural effusion.\n\
         ROCO_00002\t Chest radiograph  with   a left apical   pneumothorax.\n\
         ROCO_00003\t Invented caption with\tan extra field\n\
         ROCO_00004\t CT head.\n",
    )?;
    text(
        &dir.join("keywords.txt"),
        "ROCO_00001\t\tchest\tpleural\teffus\nROCO_00002\t\tradiograph\tpneumothorax\n",
    )?;
    text(
        &dir.join("semtypes.txt"),
        "ROCO_00001\t\tT046\tPathologic Function\nROCO_00002\t\tT047\tDisease or Syndrome\n",
    )?;
    text(
        &dir.join("cuis.txt"),
        "ROCO_00001\t\tC0000001\tC0000002\nROCO_00002\t\tC0000003\n",
    )?;
    text(
        &dir.join("dlinks.txt"),
        "ROCO_00001\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/00/01/PMC0000001.tar.gz -P /path/to/Dir\tfigure-1.jpg\n\
         ROCO_00002\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/00/02/PMC0000002.tar.gz -P /path/to/Dir\tfigure-2.jpg\n",
    )?;
    text(
        &dir.join("licences.txt"),
        "ROCO_ID,PMC_ID,CC\nROCO_00001,PMC0000001_figure-1.jpg,CC BY\nROCO_00002,PMC0000002_figure-2.jpg,CC BY\n",
    )?;
    image(&dir.join("images/ROCO_00001.jpg"), 30)?;
    // The older fetch.py naming: <PMC id>_<figure file>.
    image(&dir.join("images/PMC0000002_figure-2.jpg"), 31)?;
    let other = root.join("roco/data/test/non-radiology");
    text(
        &other.join("captions.txt"),
        "ROCO_00010\t Bar chart of invented survival rates.\n",
    )?;
    image(&other.join("images/ROCO_00010.jpg"), 32)?;
    Ok(())
}

fn melinda(root: &Path) -> Result<()> {
    let dir = root.join("melinda");
    let header = "figure_file,caption,i_meth,p_meth,i_meth_label,p_meth_label,source_note\n";
    text(
        &dir.join("train.csv"),
        &format!(
            "{header}fig_0001.jpg,\"Western blot of the invented complex, lanes 1-4.\",anti tag coimmunoprecipitation,western blot,coimmunoprecipitation,antibody,invented\n\
             fig_0002.jpg,Yeast two hybrid growth assay on selective plates.,two hybrid,sequence tag identification,two hybrid,tag,invented\n"
        ),
    )?;
    text(
        &dir.join("dev.csv"),
        &format!(
            "{header}fig_0003.jpg,Pull down of the tagged bait protein.,pull down,western blot,affinity chromatography,antibody,invented\n"
        ),
    )?;
    text(
        &dir.join("test.csv"),
        &format!(
            "{header}fig_0004.jpg,Fluorescence microscopy of two tagged proteins.,colocalization,fluorescence imaging,imaging,tag,invented\n"
        ),
    )?;
    for k in 1..=4u64 {
        image(&dir.join(format!("melinda_images/fig_{k:04}.jpg")), 40 + k)?;
    }
    Ok(())
}

fn mimic(root: &Path) -> Result<()> {
    let dir = root.join("mimic-cxr-jpg");
    let images = [
        (
            "19999901",
            "59999901",
            "0a000001-00000001-00000001-00000001-00000001",
            "PA",
            "train",
        ),
        (
            "19999901",
            "59999901",
            "0a000001-00000001-00000001-00000001-00000002",
            "LATERAL",
            "train",
        ),
        (
            "19999901",
            "59999902",
            "0a000001-00000001-00000001-00000001-00000003",
            "AP",
            "validate",
        ),
        (
            "19999902",
            "59999903",
            "0a000001-00000001-00000001-00000001-00000004",
            "PA",
            "test",
        ),
        (
            "19999902",
            "59999903",
            "0a000001-00000001-00000001-00000001-00000005",
            "LL",
            "test",
        ),
    ];
    let mut metadata = String::from(
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning\n",
    );
    let mut split = String::from("dicom_id,study_id,subject_id,split\n");
    for (k, (subject, study, dicom, view, part)) in images.iter().enumerate() {
        metadata.push_str(&format!("{dicom},{subject},{study},CHEST (PA AND LAT),{view},16,16,21800506,213014.531,CHEST (PA AND LAT),postero-anterior,Erect\n"));
        split.push_str(&format!("{dicom},{study},{subject},{part}\n"));
        image(
            &dir.join(format!(
                "files/p{}/p{subject}/s{study}/{dicom}.jpg",
                &subject[..2]
            )),
            50 + k as u64,
        )?;
    }
    gzip(&dir.join("mimic-cxr-2.0.0-metadata.csv.gz"), &metadata)?;
    gzip(&dir.join("mimic-cxr-2.0.0-split.csv.gz"), &split)?;
    gzip(
        &dir.join("mimic-cxr-2.0.0-chexpert.csv.gz"),
        "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices\n\
         19999901,59999901,,,,,,,,,1.0,,,,,\n\
         19999901,59999902,,-1.0,,,,,,,,1.0,,,0.0,1.0\n\
         19999902,59999903,,,,,,,,1.0,,,,-1.0,,\n",
    )?;
    let reports = [
        (
            "19999901",
            "59999901",
            "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ year old woman with invented cough.\n \n COMPARISON:  None.\n \n FINDINGS: \n \n The lungs are clear.  Heart size is normal.  No pleural effusion or pneumothorax.\n \n IMPRESSION: \n \n No acute cardiopulmonary process.\n",
        ),
        (
            "19999901",
            "59999902",
            "                                 FINAL REPORT\n EXAMINATION:  CHEST (PORTABLE AP)\n \n INDICATION:  ___ year old woman, invented shortness of breath.\n \n FINDINGS: \n \n Small right pleural effusion.  Right IJ line tip in the SVC.\n \n IMPRESSION: \n \n Small right pleural effusion.\n",
        ),
        (
            "19999902",
            "59999903",
            "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ year old man with invented fever.\n \n IMPRESSION: \n \n Left lower lobe opacity, possibly pneumonia.\n",
        ),
    ];
    for (subject, study, report) in reports {
        text(
            &dir.join(format!("files/p{}/p{subject}/s{study}.txt", &subject[..2])),
            report,
        )?;
    }
    Ok(())
}

fn iu_report(
    uid: u32,
    findings: &str,
    impression: &str,
    major: &[&str],
    images: &[&str],
) -> String {
    let mesh: String = major
        .iter()
        .map(|m| format!("<major>{m}</major>"))
        .collect();
    let parents: String = images
        .iter()
        .map(|id| format!("<parentImage id=\"{id}\"><figureId>F1</figureId><caption>Xray Chest PA and Lateral</caption><panel type=\"single\"><url>/hadoop/storage/radiology/extract/{id}.jpg</url><imgModality>7</imgModality></panel></parentImage>\n"))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<eCitation>
<meta type="rr"/>
<uId id="CXR{uid}"/>
<pmcId id="{uid}"/>
<docSource>CXR</docSource>
<IUXRId id="{uid}"/>
<licenseType>open-access</licenseType>
<licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
<ccLicense>byncnd</ccLicense>
<articleURL/>
<articleDate>2013-08-01</articleDate>
<articleType>XR</articleType>
<publisher>Indiana University</publisher>
<title>Indiana University Chest X-ray Collection</title>
<note>Invented fixture content in the Open-i report structure.</note>
<specialty>pulmonary diseases</specialty>
<subset>CXR</subset>
<MedlineCitation Owner="Indiana University" Status="supplied by publisher">
<Article PubModel="Electronic">
<Journal><JournalIssue><PubDate><Year>2013</Year><Month>08</Month><Day>01</Day></PubDate></JournalIssue></Journal>
<ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
<Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">Invented indication.</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract>
</Article>
</MedlineCitation>
<MeSH>{mesh}</MeSH>
{parents}</eCitation>
"#
    )
}

fn iu_xray(root: &Path) -> Result<()> {
    let dir = root.join("iu-xray");
    text(
        &dir.join("ecgen-radiology/1.xml"),
        &iu_report(
            1,
            "The heart is normal in size. The lungs are clear.",
            "Normal chest.",
            &["normal"],
            &["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
        ),
    )?;
    text(
        &dir.join("ecgen-radiology/2.xml"),
        &iu_report(
            2,
            "Mildly enlarged cardiac silhouette. No effusion.",
            "Mild cardiomegaly.",
            &["Cardiomegaly/mild", "Lung/hypoinflation"],
            &["CXR2_1_IM-0652-1001"],
        ),
    )?;
    text(
        &dir.join("ecgen-radiology/10.xml"),
        &iu_report(10, "", "No acute disease.", &["normal"], &[]),
    )?;
    image(&dir.join("images/CXR1_1_IM-0001-3001.png"), 60)?;
    image(&dir.join("images/CXR1_1_IM-0001-4001.png"), 61)?;
    image(&dir.join("images/CXR2_1_IM-0652-1001.png"), 62)?;
    Ok(())
}

fn image_folder(root: &Path) -> Result<()> {
    let dir = root.join("image-folder");
    image(&dir.join("train/normal/a.png"), 70)?;
    image(&dir.join("train/effusion/b.png"), 71)?;
    image(&dir.join("train/effusion/c.jpg"), 72)?;
    image(&dir.join("test/normal/d.png"), 73)?;
    text(
        &dir.join("train/effusion/b.txt"),
        "Small right pleural effusion.\n",
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    vqa_rad(&root)?;
    slake(&root)?;
    medvqa2019(&root)?;
    roco(&root)?;
    melinda(&root)?;
    mimic(&root)?;
    iu_xray(&root)?;
    image_folder(&root)?;
    println!("fixtures written under {}", root.display());
    Ok(())
}
