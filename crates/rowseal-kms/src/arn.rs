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

/// Whether `arn` is a KMS key ARN with a non-empty partition, account and
/// key id (what an allow-list entry must be).
pub(crate) fn is_key_arn(arn: &str) -> bool {
    split(arn).is_some_and(|p| !p[1].is_empty() && !p[4].is_empty() && p[5].len() > "key/".len())
}

/// Whether the key ARN `candidate` is allowed by the allow-list entry
/// `allowed` (a key ARN): the same ARN, or, when `allowed` names a
/// multi-Region key, a replica of it (same partition, account and `mrk-` key
/// id, any region). Exact, case-sensitive comparison; anything that is not a
/// key ARN matches nothing.
pub(crate) fn allows(allowed: &str, candidate: &str) -> bool {
    let (Some(a), Some(c)) = (split(allowed), split(candidate)) else {
        return false;
    };
    if allowed == candidate {
        return true;
    }
    is_multi_region(allowed) && a[1] == c[1] && a[4] == c[4] && a[5] == c[5]
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
    fn allow_list_entries_are_full_key_arns() {
        assert!(is_key_arn(MRK));
        assert!(is_key_arn(SINGLE));
        assert!(is_key_arn(
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/x"
        ));
        for s in [
            "alias/prod",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:alias/prod",
            "arn:aws:kms:us-east-1:111122223333:key/",
            "arn::kms:us-east-1:111122223333:key/x",
            "arn:aws:kms:us-east-1::key/x",
            "arn:aws:kms::111122223333:key/x",
            "arn:aws:s3:us-east-1:111122223333:key/x",
            "",
        ] {
            assert!(!is_key_arn(s), "{s}");
        }
    }

    #[test]
    fn allows_the_key_itself_and_replicas_of_multi_region_keys() {
        let mrk_west = in_region(MRK, "us-west-2").unwrap();
        let single_west = in_region(SINGLE, "us-west-2").unwrap();
        assert!(allows(SINGLE, SINGLE));
        assert!(allows(MRK, MRK));
        assert!(allows(MRK, &mrk_west), "a replica of an allowed mrk");
        assert!(allows(&mrk_west, MRK), "and the other way round");
        assert!(
            !allows(SINGLE, &single_west),
            "a single-Region key id in another region is another key"
        );
        for other in [
            // another account, partition, key id; an alias; case changes
            "arn:aws:kms:us-east-1:444455556666:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws-cn:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:key/mrk-0000abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890a",
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890abc",
            "arn:aws:kms:us-east-1:111122223333:key/MRK-1234ABCD12AB34CD56EF1234567890AB",
            "arn:aws:kms:us-east-1:111122223333:alias/mrk-1234abcd12ab34cd56ef1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            SINGLE,
            "",
        ] {
            assert!(!allows(MRK, other), "{other}");
        }
        // A non-ARN entry allows nothing, not even itself.
        assert!(!allows("alias/prod", "alias/prod"));
        assert!(!allows("", ""));
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
