//! Just enough of KMS key ARNs: `arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID`.

/// The fields of a KMS key ARN, or `None` if `s` is not one.
fn split(s: &str) -> Option<[&str; 6]> {
    let mut parts = s.splitn(6, ':');
    let arn = parts.next()?;
    let partition = parts.next()?;
    let service = parts.next()?;
    let region = parts.next()?;
    let account = parts.next()?;
    let resource = parts.next()?;
    (arn == "arn" && service == "kms" && !region.is_empty() && resource.starts_with("key/"))
        .then_some([arn, partition, service, region, account, resource])
}

/// The region of a KMS key ARN.
pub(crate) fn region(arn: &str) -> Option<&str> {
    split(arn).map(|p| p[3])
}

/// Whether `arn` names a multi-Region key (key id `mrk-...`).
pub(crate) fn is_multi_region(arn: &str) -> bool {
    split(arn).is_some_and(|p| p[5].starts_with("key/mrk-"))
}

/// The ARN of the same multi-Region key in `region` (its replica there).
pub(crate) fn in_region(arn: &str, region: &str) -> Option<String> {
    let p = split(arn)?;
    Some(format!("arn:{}:kms:{region}:{}:{}", p[1], p[4], p[5]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MRK: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
    const SINGLE: &str =
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn parses_key_arns() {
        assert_eq!(region(MRK), Some("us-east-1"));
        assert!(is_multi_region(MRK));
        assert!(!is_multi_region(SINGLE));
        assert_eq!(
            in_region(MRK, "eu-west-1").as_deref(),
            Some("arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab")
        );
        assert_eq!(
            region("arn:aws-cn:kms:cn-north-1:1:key/x"),
            Some("cn-north-1")
        );
    }

    #[test]
    fn rejects_other_names() {
        for s in [
            "alias/prod",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:alias/prod",
            "arn:aws:s3:us-east-1:111122223333:key/x",
            "arn:aws:kms::111122223333:key/x",
            "",
        ] {
            assert_eq!(region(s), None, "{s}");
            assert!(!is_multi_region(s));
            assert_eq!(in_region(s, "eu-west-1"), None);
        }
    }
}
